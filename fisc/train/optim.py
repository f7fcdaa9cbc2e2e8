"""The optimizer, built from its config group ``conf/optim/<name>.yaml``.

An optim yaml names the optimizer with ``_target_`` (a class such as ``timm.optim.Lars``, or a
function that returns one, such as :func:`sgd`). Its keys are of two kinds:

- fisc's own (the fields of :class:`OptimConfig`): ``name`` (the option's label), ``lr`` (for
  ``base_batch`` images, scaled to the global batch by ``lr_scaling``), ``weight_decay``,
  ``warmup_epochs`` and ``min_lr_ratio`` (the warm-up + cosine schedule);
- every other key is a keyword argument of the target (``momentum``, ``eps``, ...), checked at
  start-up against the target's signature (:func:`optim_args`): an unknown key or a value of
  the wrong type is a :class:`OptimConfigError` naming the option and the key.

:func:`build_optimizer` calls the target with the model's parameters in two groups, weights
with ``weight_decay`` and biases and norm parameters (1-d) without, as timm's
``create_optimizer_v2`` groups them, and the scaled ``lr``. There is no table of optimizers: a
new one is its yaml and its test (``docs/architecture.md``).

No torch at import (``fisc.train.config`` imports this module, and ``--help`` loads no torch).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fisc.targets import checked_args, locate_target, signature_schema, target_label

__all__ = [
    "RUN_ARGS",
    "OptimConfig",
    "OptimConfigError",
    "adamw",
    "build_optimizer",
    "optim_args",
    "optim_schema",
    "optim_target",
    "param_groups",
    "sgd",
]


@dataclass
class OptimConfig:
    """The optim group as the run uses it: fisc's keys, and ``args``, the optimizer's own
    keyword arguments (every other key of the yaml), checked by :func:`optim_args`."""

    _target_: str = "fisc.train.optim.adamw"  # the optimizer class (or a function making one)
    name: str = "adamw"  # the option's label, shown in messages
    lr: float = 1e-3  # for base_batch images; scaled to the global batch by lr_scaling
    base_batch: int = 256
    lr_scaling: str = "linear"  # linear | sqrt | none: lr x (batch/base_batch)^1, ^0.5, ^0
    weight_decay: float = 1e-4  # on weights; none on biases and norm parameters
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    args: dict[str, Any] = field(default_factory=dict)  # the target's keyword arguments


# the yaml keys that are fisc's, not the optimizer's
OWN_KEYS = tuple(f.name for f in dataclasses.fields(OptimConfig) if f.name != "args")
# the target's parameters fisc sets (never from the yaml's other keys)
RUN_ARGS = {
    "params": "the model's parameters, in weight-decay groups",
    "lr": "optim.lr scaled to the global batch",
    "weight_decay": "optim.weight_decay, set per parameter group",
}


class OptimConfigError(ValueError):
    """An optim config that cannot build its optimizer (the message names the option and the
    key)."""


def _label(cfg: Mapping) -> str:
    return target_label("optim", cfg)


def _is_callable(target: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{target} is not a class or a function")


def optim_target(cfg: Mapping) -> Callable:
    """The class (or function) ``cfg["_target_"]`` names; it must take ``params`` and
    ``lr``."""
    obj = locate_target(
        cfg,
        label=_label(cfg),
        error=OptimConfigError,
        what="optimizer class",
        example="torch.optim.AdamW",
        check=_is_callable,
        unknown="unknown optimizer, ",
    )
    target = cfg["_target_"]
    params = inspect.signature(obj).parameters
    if "params" not in params or "lr" not in params:
        raise OptimConfigError(
            f"{_label(cfg)}: _target_ {target} is not an optimizer (it takes no params and lr)"
        )
    return obj


def _config_type(hint: Any) -> Any:
    """The OmegaConf type of a constructor's type hint: ``int``, ``float``, ``bool``, ``str``
    (optionally ``None``), a tensor alternative dropped (torch's ``lr: float | Tensor``);
    anything else unchecked (``Any``): the constructor's own checks see it in the trial build."""
    simple = (int, float, bool, str)
    if hint in simple:
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(hint) if getattr(a, "__name__", "") != "Tensor"]
        optional = type(None) in kept
        kept = [a for a in kept if a is not type(None)]
        if len(kept) == 1 and kept[0] in simple:
            return typing.Optional[kept[0]] if optional else kept[0]  # noqa: UP045
    return Any


def optim_schema(target: Callable) -> type:
    """A dataclass of ``target``'s configurable parameters: their types (:func:`_config_type`)
    and defaults (a parameter without one is required), :data:`RUN_ARGS` left out."""
    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # a hint that does not evaluate here: no types, the values unchecked
        hints = {}
    name = f"{getattr(target, '__name__', 'Optimizer')}Args"
    return signature_schema(target, hints, skip=RUN_ARGS, name=name, type_of=_config_type)


def optim_args(cfg: Mapping) -> dict[str, Any]:
    """The optimizer's keyword arguments ``cfg`` sets (its keys but :data:`OWN_KEYS`), checked
    against the target's signature and converted to its types (an int where a float is declared
    becomes a float). Raises :class:`OptimConfigError` naming the option and the key: an
    unknown key, a wrong type, a required argument not set, or a parameter fisc sets."""
    target = optim_target(cfg)
    label = _label(cfg)
    given = {k: v for k, v in cfg.items() if k not in OWN_KEYS}
    checked = checked_args(
        given,
        optim_schema(target),
        label=label,
        target=cfg["_target_"],
        run_args=RUN_ARGS,
        error=OptimConfigError,
        known_hint=f"; fisc's keys: {list(OWN_KEYS)}",
    )
    if cfg.get("weight_decay") and "weight_decay" not in inspect.signature(target).parameters:
        raise OptimConfigError(
            f"{label}: {cfg['_target_']} takes no weight_decay; set optim.weight_decay=0"
        )
    return checked


def param_groups(module, weight_decay: float) -> list[dict[str, Any]]:
    """``module``'s trainable parameters in timm's weight-decay groups: biases and 1-d
    parameters (norm scales and shifts) without weight decay, then the others with
    ``weight_decay``; one group without it when ``weight_decay`` is 0. Empty groups left out."""
    no_decay, decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if weight_decay and not (p.ndim <= 1 or name.endswith(".bias")):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}] if no_decay else []
    return groups + ([{"params": decay, "weight_decay": weight_decay}] if decay else [])


def build_optimizer(cfg: OptimConfig, module, lr: float):
    """The optimizer ``cfg`` describes over ``module``'s parameters (:func:`param_groups`),
    at learning rate ``lr``. A value the target refuses raises :class:`OptimConfigError`."""
    cfg_map = {"_target_": cfg._target_, "name": cfg.name}
    target = optim_target(cfg_map)
    try:
        return target(param_groups(module, cfg.weight_decay), lr=lr, **cfg.args)
    except Exception as e:  # the constructor's own check, e.g. a negative momentum
        raise OptimConfigError(f"{_label(cfg_map)}: {e}") from e


# Optimizers whose yaml keeps the settings of fisc's earlier timm names ('sgd', 'adamw'), so
# that their configs (and run dirs) are unchanged: called by the yaml's _target_.


def sgd(
    params,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    foreach: bool | None = None,
):
    """``torch.optim.SGD`` with Nesterov momentum by default (timm's ``sgd``)."""
    import torch

    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        dampening=dampening,
        weight_decay=weight_decay,
        foreach=foreach,
    )


def adamw(
    params,
    lr: float,
    momentum: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    foreach: bool | None = None,
):
    """``torch.optim.AdamW`` whose first-moment coefficient beta1 is named ``momentum`` (the
    key every optim yaml has always had), the second ``beta2``; torch's defaults otherwise."""
    import torch

    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=(momentum, beta2),
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        foreach=foreach,
    )
