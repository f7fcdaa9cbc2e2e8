"""The error of a configuration that cannot describe a valid run, in a module of its own so
that every part of the config check can raise it (:mod:`fisc.train.config`, which re-exports it,
and :mod:`fisc.train.callbacks`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot describe a valid run."""
