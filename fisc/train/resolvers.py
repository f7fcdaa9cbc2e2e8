"""The config resolvers ``train.py`` needs before composing: light imports only (omegaconf),
so that ``python train.py --help`` and shell completion do not load torch."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# keys that may change between launches of one run (resume): where and how long it runs
RESUMABLE_CHANGES = (
    "trainer",
    # the callbacks group (conf/callbacks/) watches a run (LR monitor, model summary) or decides
    # when it stops (early stopping), like the trainer's flags; it is not part of the recipe, so
    # adding or dropping one resumes the same run in the same dir. (Lightning restores the state
    # of the callbacks a checkpoint and the relaunch share, and warns about the others.)
    "callbacks",
    "run_dir",
    "ckpt_path",
    "num_workers",
    "eval_batch_size",
    "progress_refresh",
    "paths",
    "logger",
    "postprocess",
    "keep_every_n_epochs",
    "checkpoint_every_n_steps",
    "deterministic",
    "threads",
)


def without_targets(data):
    """``data`` (containers) without its ``_target_`` keys, at every depth."""
    if isinstance(data, dict):
        return {k: without_targets(v) for k, v in data.items() if k != "_target_"}
    if isinstance(data, list):
        return [without_targets(v) for v in data]
    return data


def config_hash(*, _root_: DictConfig) -> str:
    """``${config_hash:}``: 10 hex digits of the sha256 of the recipe (the config without the
    keys a resume may change), so the same config always gets the same default run dir.
    ``_target_`` keys (a loss's class) are left out: a group's option is named by its ``name``
    and set by its fields, and the run dirs of configs from before fisc named classes keep
    their hash. (A run whose ``loss._target_`` alone is overridden gets the same dir, and
    resuming it is refused: ``check_same_run`` compares ``_target_``.)"""

    data = without_targets(OmegaConf.to_container(_root_, resolve=False))
    recipe = {k: v for k, v in data.items() if k not in (*RESUMABLE_CHANGES, "hydra", "run_name")}
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


if not OmegaConf.has_resolver("config_hash"):
    OmegaConf.register_new_resolver("config_hash", config_hash)
