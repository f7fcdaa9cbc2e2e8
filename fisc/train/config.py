"""Typed schemas for the Hydra config groups: a misspelt or mistyped key is an error at start-up.

Each group of ``conf/`` is merged onto its dataclass here (``OmegaConf.structured``), which
rejects unknown keys and wrong types, then turned into the dataclass instance the code uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import fisc.train.resolvers  # noqa: F401  (registers ${config_hash:} for every composer)
from fisc.augment.ops import OpConfigError
from fisc.augment.pipeline import AugmentConfig
from fisc.models.descriptor import ModelConfig
from fisc.train.errors import ConfigError
from fisc.train.optim import OWN_KEYS as OWN_OPTIM_KEYS
from fisc.train.optim import OptimConfig, OptimConfigError, optim_args


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
class StageConfig:
    """One stage of progressive-resolution training (resumes from the previous stage)."""

    train_size: int = "???"  # type: ignore[assignment]
    epochs: int = "???"  # type: ignore[assignment]
    lr_scale: float = 1.0  # this stage's learning rate, relative to optim.lr
    train_images: int | None = None  # first N training images (a growing ArcFace class set)


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
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "logger": LoggerConfig,
}


def typed(cfg: DictConfig, group: str):
    """``cfg[group]`` checked against its schema and returned as a dataclass instance. The
    optim group's keys that are not fisc's go to ``OptimConfig.args``, checked against the
    optimizer's signature (:func:`fisc.train.optim.optim_args`)."""
    node, extra = cfg[group], {}
    try:
        if group == "optim":
            plain = OmegaConf.to_container(node, resolve=True)
            extra = {"args": optim_args(plain)}
            node = {k: v for k, v in plain.items() if k in OWN_OPTIM_KEYS}
        merged = OmegaConf.merge(OmegaConf.structured(SCHEMAS[group]), node, extra)
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(f"config group '{group}': {e}") from e


NO_DEFAULT = object()


def key_default(key: str, before: dict, now: dict) -> Any:
    """The default of ``group.field`` (``NO_DEFAULT`` when there is none), for a key a saved
    config (``before``, flattened) lacks and the current one (``now``) has: the field's default
    in the group's schema, the parameter's default in the loss class's or the optimizer's
    constructor (``optim.<key>`` but fisc's own keys), or for
    ``group._target_`` the class of the saved option (``conf/<group>/<before's name>.yaml``: a
    config saved before fisc named classes)."""
    group, _, name = key.partition(".")
    if name == "_target_":
        from fisc.paths import config_dir

        path = config_dir() / group / f"{before.get(f'{group}.name')}.yaml"
        return OmegaConf.load(path).get("_target_", NO_DEFAULT) if path.is_file() else NO_DEFAULT
    if group == "loss" or (group == "optim" and name not in OWN_OPTIM_KEYS):
        try:
            fields = dataclasses.fields(_target_schema(group, now[f"{group}._target_"]))
        except (KeyError, ValueError):
            return NO_DEFAULT
        return next((f.default for f in fields if f.name == name), NO_DEFAULT)
    for f in dataclasses.fields(SCHEMAS[group]) if group in SCHEMAS else ():
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    return NO_DEFAULT


def _target_schema(group: str, target: str) -> type:
    """The schema of the arguments of a loss or optimizer class (``_target_``)."""
    if group == "loss":
        from fisc.losses import loss_class, loss_schema

        return loss_schema(loss_class({"_target_": target}))
    from fisc.train.optim import optim_schema, optim_target

    return optim_schema(optim_target({"_target_": target}))


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
        "loss",  # checked against its loss class's signature (check_loss)
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
    out["loss"] = check_loss(resolved.loss, out["model"].dims)
    check_optim(out["optim"])
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


def check_loss(loss: DictConfig, dims: int) -> dict[str, Any]:
    """The loss group (``_target_``, ``name``, the loss's arguments) checked against its class's
    constructor (:func:`fisc.losses.loss_fields`: unknown keys, types), then built once as a
    trial (2 classes for a loss that takes ``num_classes``) so that the constructor's own
    checks of the values also run before the run dir is touched. Returns it as a plain dict,
    values converted to the constructor's types: what :func:`fisc.losses.build_loss` takes."""
    import torch

    from fisc.losses import build_loss, loss_fields

    if not isinstance(loss, DictConfig):
        raise ConfigError(f"loss must be a mapping (_target_, name, arguments), got {loss!r}")
    plain = OmegaConf.to_container(loss, resolve=True)
    try:
        checked = {k: v for k, v in plain.items() if k in ("_target_", "name")}
        checked.update(loss_fields(plain))
        with torch.random.fork_rng(devices=[]):  # the trial build draws no number of the run's
            build_loss(checked, dims, num_classes=2)
    except ValueError as e:
        raise ConfigError(f"config group 'loss': {e}") from e
    return checked


def check_optim(optim: OptimConfig) -> None:
    """The optimizer built once as a trial, on a weight and a bias, so that its constructor's
    own checks of the values (e.g. a negative momentum) run before the run dir is touched."""
    import torch

    from fisc.train.optim import build_optimizer

    trial = torch.nn.Linear(2, 2)
    try:
        build_optimizer(optim, trial, optim.lr)
    except OptimConfigError as e:
        raise ConfigError(f"config group 'optim': {e}") from e


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
