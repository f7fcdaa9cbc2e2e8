"""The training losses, each built from its config group ``conf/loss/<name>.yaml``.

A loss yaml names its class with ``_target_``; its other keys, but ``name`` (the option's label,
shown in messages), are keyword arguments of the class's constructor. The constructor's typed
signature is the loss's schema: :func:`loss_fields` rejects a key it does not take and a value of
the wrong type, naming the loss and the key, when the config is checked at start-up.
:func:`build_loss` then builds it by calling the class. A constructor parameter
named in :data:`RUNTIME_ARGS` is filled in by the run, never by the yaml. There is no table of
losses: a new one is its module, its yaml and its tests (``docs/architecture.md``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from fisc.losses.base import ExtraViews, TrainingLoss
from fisc.targets import checked_args, locate_target, signature_schema, target_label

__all__ = [
    "RUNTIME_ARGS",
    "ExtraViews",
    "TrainingLoss",
    "build_loss",
    "loss_class",
    "loss_fields",
]

# constructor parameters the run provides (a loss asks for one by naming it)
RUNTIME_ARGS = {
    "dims": "the descriptor size, model.dims",
    "num_classes": "the number of training images",
}
LABEL_KEYS = ("_target_", "name")  # keys of a loss yaml that are not constructor arguments


class LossConfigError(ValueError):
    """A loss config that cannot build its loss (the message names the loss and the key)."""


def _label(cfg: Mapping) -> str:
    return target_label("loss", cfg)


def _is_class(target: str, obj: Any) -> None:
    if not isinstance(obj, type):
        raise TypeError(f"{target} is not a class")


def loss_class(cfg: Mapping) -> type[TrainingLoss]:
    """The class ``cfg["_target_"]`` names; it must be a :class:`TrainingLoss`."""
    cls = locate_target(
        cfg,
        label=_label(cfg),
        error=LossConfigError,
        what="loss class",
        example="fisc.losses.infonce_koleo.InfoNCEKoLeoLoss",
        check=_is_class,
    )
    if not issubclass(cls, TrainingLoss):
        raise LossConfigError(
            f"{_label(cfg)}: _target_ {cfg['_target_']} is not a fisc.losses.TrainingLoss subclass"
        )
    return cls


def loss_schema(cls: type) -> type:
    """A dataclass of ``cls``'s configurable constructor parameters: their type hints and
    defaults (a parameter without a default is required), :data:`RUNTIME_ARGS` left out."""
    hints = typing.get_type_hints(cls.__init__)
    return signature_schema(cls.__init__, hints, skip=RUNTIME_ARGS, name=f"{cls.__name__}Fields")


def loss_fields(cfg: Mapping) -> dict[str, Any]:
    """The constructor arguments ``cfg`` sets, checked against the constructor's signature and
    converted to its types (an int where a float is declared becomes a float). Raises
    :class:`LossConfigError` naming the loss and the key: an unknown key, a wrong type, a
    required argument not set, or a key the run provides."""
    cls = loss_class(cfg)
    label = _label(cfg)
    if "name" in cfg and not isinstance(cfg["name"], str):
        raise LossConfigError(f"{label}: name must be a string, got {cfg['name']!r}")
    given = {k: v for k, v in cfg.items() if k not in LABEL_KEYS}
    return checked_args(
        given,
        loss_schema(cls),
        label=label,
        target=cfg["_target_"],
        run_args=RUNTIME_ARGS,
        error=LossConfigError,
        run_hint=", not in the config; remove them",
    )


def build_loss(cfg: Mapping, dims: int, num_classes: int | None = None) -> TrainingLoss:
    """The loss ``cfg`` (a loss group's config: ``_target_``, ``name``, arguments) describes,
    built by calling its class; ``dims`` and ``num_classes`` go to a constructor that names
    them. A value the constructor refuses raises :class:`LossConfigError`."""
    fields = loss_fields(cfg)
    cls = loss_class(cfg)
    params = inspect.signature(cls.__init__).parameters
    runtime = {k: v for k, v in {"dims": dims, "num_classes": num_classes}.items() if k in params}
    if "num_classes" in runtime and not num_classes:
        raise LossConfigError(f"{_label(cfg)} needs the number of training images")
    try:
        return cls(**fields, **runtime)
    except Exception as e:  # the constructor's own check, e.g. a negative margin
        raise LossConfigError(f"{_label(cfg)}: {e}") from e
