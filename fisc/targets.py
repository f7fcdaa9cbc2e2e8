"""Config groups that name a Python object with ``_target_``: finding it and checking the
constructor arguments the config sets.

Shared by the losses (``fisc.losses``) and the optimizers (``fisc.train.optim``), each of which
adds its own rules (a loss must be a ``TrainingLoss``; an optimizer takes ``params`` and
``lr``). Plain importlib, no Hydra: the losses use it without the training stack
(``tests/test_architecture.py``); OmegaConf (a dependency of the configs anyway) converts the
values.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["checked_args", "locate", "locate_target", "signature_schema", "target_label"]


def locate(path: str) -> Any:
    """The object a dotted import path names (``package.module.Class``): the longest prefix
    that imports as a module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not (module_name + ".").startswith(e.name + "."):
                raise  # the module exists but one of its own imports is missing
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {path!r}")


def target_label(group: str, cfg: Mapping) -> str:
    """How messages name a config of ``group``: ``"loss infonce"``, or its ``_target_`` when it
    has no name."""
    return f"{group} {cfg.get('name') or cfg.get('_target_') or '(unnamed)'}"


def locate_target(
    cfg: Mapping,
    *,
    label: str,
    error: type[Exception],
    what: str,
    example: str,
    check: Callable[[str, Any], None],
    unknown: str = "",
) -> Any:
    """The object ``cfg["_target_"]`` names. ``check(target, obj)`` raises ``TypeError`` when
    the object is of the wrong kind. A missing ``_target_``, an import that fails (of every
    kind, a missing attribute included) or a wrong kind raise ``error`` naming ``label``;
    ``what`` (e.g. ``"loss class"``) and ``example`` (an import path) are shown when
    ``_target_`` is missing, ``unknown`` is a prefix of the import failure's message."""
    target = cfg.get("_target_")
    if not isinstance(target, str) or not target:
        raise error(f"{label}: needs a _target_, the {what}'s import path (e.g. {example})")
    try:
        obj = locate(target)
        check(target, obj)
    except Exception as e:
        raise error(f"{label}: {unknown}cannot import _target_ {target!r}: {e}") from e
    return obj


def signature_schema(
    fn: Callable,
    hints: Mapping[str, Any],
    *,
    skip: Mapping[str, Any] | set[str],
    name: str,
    type_of: Callable[[Any], Any] = lambda hint: hint,
) -> type:
    """A dataclass of ``fn``'s configurable parameters, for :func:`checked_args`: each
    parameter's type (``type_of`` of its hint in ``hints``, ``Any`` without one) and default (a
    parameter without one is required); ``self``, ``*args``, ``**kwargs`` and the names in
    ``skip`` (those the run sets) left out."""
    fields = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self" or p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = dataclasses.MISSING if p.default is p.empty else p.default
        fields.append((p.name, type_of(hints.get(p.name, Any)), dataclasses.field(default=default)))
    return dataclasses.make_dataclass(name, fields)


def checked_args(
    given: Mapping[str, Any],
    schema: type,
    *,
    label: str,
    target: str,
    run_args: Mapping[str, str],
    error: type[Exception],
    run_hint: str = "",
    known_hint: str = "",
) -> dict[str, Any]:
    """``given`` (a config's constructor arguments) checked against ``schema`` (a dataclass
    made from the constructor's signature) and converted to its types; ``error`` names
    ``label`` and the key for an argument the run sets (``run_args``: key -> why), an unknown
    key, a wrong type or a required argument not set."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    provided = sorted(set(given) & set(run_args))
    if provided:
        raise error(
            f"{label}: {provided} are set by the run ("
            + "; ".join(f"{k}: {run_args[k]}" for k in provided)
            + ")"
            + run_hint
        )
    known = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise error(
            f"{label} does not use {unknown}; remove them ({target} takes {known}{known_hint})"
        )
    try:
        checked = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), dict(given)))
    except OmegaConfBaseException as e:
        raise error(f"{label} ({target}): {e}") from e
    return {k: getattr(checked, k) for k in given}
