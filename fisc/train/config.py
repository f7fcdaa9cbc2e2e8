"""Typed schemas for the Hydra config groups: a misspelt or mistyped key is an error at start-up.

Each group of ``conf/`` is merged onto its dataclass here (``OmegaConf.structured``), which
rejects unknown keys and wrong types, then turned into the dataclass instance the code uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import fisc.train.resolvers  # noqa: F401  (registers ${config_hash:} for every composer)
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
    max_train_images: int | None = None  # train on the first N images by id (null: all)
    minidisc: dict[str, Any] = field(default_factory=dict)  # MinidiscSpec fields
    # an undecodable training image: skip it (replaced by the next one, listed in
    # <run_dir>/skipped_images.txt) instead of stopping the run; stop anyway when more than
    # this fraction of the training set is skipped
    skip_bad_images: bool = False
    max_bad_fraction: float = 0.001
    # JPEGs decode at a reduced scale (1/2, 1/4, 1/8) while their shorter side stays at least
    # this many pixels; null: 2 x model.train_size; 0: always in full
    decode_min_side: int | None = None


@dataclass
class LossConfig:
    name: str = "infonce_koleo"  # infonce_koleo | contrastive_xbm | arcface
    # infonce_koleo (SSCD)
    temperature: float = 0.05
    entropy_weight: float = 10.0
    mix_fraction: float = 0.0  # mixed images added per batch, as a fraction of the batch
    mix_alpha: float = 1.0  # mixup λ ~ Beta(α, α)
    cutmix_prob: float = 0.5  # a mixed image is a cutmix (else a mixup) with this probability
    # contrastive_xbm (1st place)
    pos_margin: float = 0.0
    neg_margin: float = 1.0
    # contrastive_xbm and infonce_koleo: a cross-batch memory of past embeddings as negatives
    memory_size: int = 0  # cross-batch memory entries (0: none)
    memory_warmup: int = 0  # steps before the memory is used
    # arcface (2nd place)
    margin: float = 0.4
    scale: float = 40.0


LOSS_FIELDS = {  # which LossConfig fields each loss reads (others must keep their defaults)
    "infonce_koleo": {
        "temperature",
        "entropy_weight",
        "mix_fraction",
        "mix_alpha",
        "cutmix_prob",
        "memory_size",
        "memory_warmup",
    },  # fmt: skip
    "contrastive_xbm": {"pos_margin", "neg_margin", "memory_size", "memory_warmup"},
    "arcface": {"margin", "scale"},
}


@dataclass
class StageConfig:
    """One stage of progressive-resolution training (resumes from the previous stage)."""

    train_size: int = "???"  # type: ignore[assignment]
    epochs: int = "???"  # type: ignore[assignment]
    lr_scale: float = 1.0  # this stage's learning rate, relative to optim.lr
    train_images: int | None = None  # first N training images (a growing ArcFace class set)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd | lars (timm's optimizers)
    lr: float = 1e-3  # for base_batch images; scaled to the global batch by lr_scaling
    base_batch: int = 256
    lr_scaling: str = "linear"  # linear | sqrt | none: lr x (batch/base_batch)^1, ^0.5, ^0
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio


WATCH_LOG = (None, "gradients", "parameters", "all")  # wandb.watch(log=...)


@dataclass
class LoggerConfig:
    kind: str = "csv"  # csv | wandb
    project: str = "fisc"
    mode: str = "offline"  # wandb: offline | online | disabled
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    media: bool = True  # val_reports/epochNNN (PR curve, gallery); W&B: also as media
    gallery: int = 8  # false positives and missed matches shown per validation
    # W&B only. log_model: checkpoints as W&B artifacts, as Lightning's WandbLogger does it:
    # false | true (when training ends) | "all" (each checkpoint as it is written)
    log_model: Any = False
    watch: str | None = None  # W&B only: wandb.watch the model: gradients | parameters | all
    watch_log_freq: int = 100  # with watch: every N training batches

    def __post_init__(self) -> None:
        if self.log_model not in (False, True, "all"):
            raise ValueError(f"log_model must be false | true | all, got {self.log_model!r}")
        if self.watch not in WATCH_LOG:
            options = "null | gradients | parameters | all"
            raise ValueError(f"watch must be {options}, got {self.watch!r}")
        if self.watch_log_freq < 1:
            raise ValueError(f"watch_log_freq must be >= 1, got {self.watch_log_freq}")


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
        "keep_every_n_epochs",
        "checkpoint_every_n_steps",
        "deterministic",
        "threads",
        "init_from",
        "stages",
        "postprocess",
        "paths",
        "trainer",
        "callbacks",
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
    if "callbacks" in cfg.trainer:
        raise ConfigError(
            "trainer.callbacks: fisc builds the Trainer's callbacks; add yours to the callbacks "
            "group instead: +callbacks.<name>._target_=<class path> (see conf/callbacks/)"
        )
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
    if not isinstance(cfg.get("deterministic", False), bool):
        raise ConfigError(f"deterministic must be true or false, got {cfg.deterministic!r}")
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):  # fmt: skip
        raise ConfigError(f"threads must be a positive int or null, got {threads!r}")
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size (global) must be >= 2, got {cfg.batch_size}")
    loss = out["loss"]
    if loss.name not in LOSS_FIELDS:
        raise ConfigError(f"unknown loss {loss.name!r}; known: {sorted(LOSS_FIELDS)}")
    default = LossConfig()
    unused = sorted(
        k
        for k in set().union(*LOSS_FIELDS.values()) - LOSS_FIELDS[loss.name]
        if getattr(loss, k) != getattr(default, k)
    )
    if unused:
        raise ConfigError(f"loss {loss.name} does not use {unused}; remove them")
    if out["optim"].name not in ("adamw", "sgd", "lars"):
        raise ConfigError(f"unknown optimizer {out['optim'].name!r} (adamw | sgd | lars)")
    if out["optim"].lr_scaling not in ("linear", "sqrt", "none"):
        rule = out["optim"].lr_scaling
        raise ConfigError(f"optim.lr_scaling: linear | sqrt | none, not {rule!r}")
    out["stages"] = check_stages(cfg)
    from fisc.train.callbacks import build_callbacks

    out["callbacks"] = build_callbacks(cfg)  # built here: a bad _target_ stops the launch early
    if cfg.get("postprocess"):
        from fisc.postprocess.spec import PostProcessor

        try:  # the spec parses, and its output of model.dims-d descriptors fits the limit
            PostProcessor(cfg.postprocess)._check_dims(out["model"].dims)
        except ValueError as e:
            raise ConfigError(f"postprocess: {e}") from e
    return out


def check_stages(cfg: DictConfig) -> list[StageConfig]:
    """The progressive-resolution stages (``stages: [{train_size, epochs}, ...]``), checked."""
    raw = cfg.get("stages") or []
    try:
        stages = [
            OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StageConfig), s)) for s in raw
        ]
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(f"stages: {e}") from e
    for i, st in enumerate(stages):
        if st.train_size < 16 or st.epochs < 1:
            raise ConfigError(f"stages[{i}]: train_size >= 16 and epochs >= 1, got {st}")
    return stages
