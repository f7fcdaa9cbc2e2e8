"""Typed schemas for the Hydra config groups: a misspelt or mistyped key is an error at start-up.

Each group of ``conf/`` is merged onto its dataclass here (``OmegaConf.structured``), which
rejects unknown keys and wrong types, then turned into the dataclass instance the code uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fisc.augment.ops import OpConfigError
from fisc.augment.pipeline import AugmentConfig
from fisc.models.descriptor import ModelConfig


class ConfigError(ValueError):
    """A configuration that cannot describe a valid run."""


@dataclass
class DataConfig:
    kind: str = "minidisc"  # minidisc | disc21 | folder
    root: str = "???"
    train_folder: str | None = None  # default: <root>/images/training (folder: <root>)
    val_ground_truth: str | None = None  # CSV, relative to root; null: no validation
    build_if_missing: bool = True  # minidisc only: generate it when absent
    minidisc: dict[str, Any] = field(default_factory=dict)  # MinidiscSpec fields


@dataclass
class LossConfig:
    name: str = "infonce_koleo"
    temperature: float = 0.05
    entropy_weight: float = 10.0


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # for base_batch images; scaled linearly to the global batch
    base_batch: int = 256
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio


@dataclass
class LoggerConfig:
    kind: str = "csv"  # csv | wandb
    project: str = "fisc"
    mode: str = "offline"  # wandb: offline | online | disabled
    group: str | None = None
    tags: list[str] = field(default_factory=list)


SCHEMAS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "logger": LoggerConfig,
}


def typed(cfg: DictConfig, group: str):
    """``cfg[group]`` checked against its schema and returned as a dataclass instance."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SCHEMAS[group]), cfg[group])
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(f"config group '{group}': {e}") from e


ROOT_KEYS = frozenset(
    {
        "seed",
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "run_name",
        "run_dir",
        "ckpt_path",
        "progress_refresh",
        "paths",
        "trainer",
        *SCHEMAS,
    }
)
PATH_KEYS = frozenset({"data_dir", "output_dir"})


def _check_keys(found, allowed, where: str) -> None:
    unknown = sorted(set(found) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; known: {sorted(allowed)}")


def trainer_keys() -> frozenset[str]:
    import inspect

    import pytorch_lightning as pl

    params = inspect.signature(pl.Trainer.__init__).parameters
    set_by_fisc = {"self", "callbacks", "logger", "default_root_dir"}
    return frozenset(p for p in params if p not in set_by_fisc)


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """Every group as its dataclass; raises :class:`ConfigError` naming the first bad key."""
    _check_keys(cfg.keys(), ROOT_KEYS, "top-level")
    _check_keys(cfg.paths.keys(), PATH_KEYS, "paths")
    _check_keys(cfg.trainer.keys(), trainer_keys(), "trainer (pytorch_lightning.Trainer)")
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise ConfigError(f"required config values not set: {sorted(missing)}")
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as e:
        raise ConfigError(f"config cannot be resolved: {e}") from e
    out = {group: typed(resolved, group) for group in SCHEMAS}
    try:
        out["augment"].build(out["model"].train_size)  # every op and value, before training
    except OpConfigError as e:
        raise ConfigError(f"augment ({out['augment'].name}): {e}") from e
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size (global) must be >= 2, got {cfg.batch_size}")
    return out
