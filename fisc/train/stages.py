"""Staged training (``stages``): one run per stage in ``<run_dir>/stage<k>``, each at its
training size and length, starting from the previous stage's last checkpoint. The loop itself
is :func:`fisc.train.run.train`'s; here, each stage's config and whether it already ran."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fisc.train.records import TrainResult

log = logging.getLogger(__name__)


def stage_config(cfg: DictConfig, k: int, stage, previous: str | None) -> DictConfig:
    """The config of stage ``k`` of ``cfg``: its own run dir and name, size, epochs and
    training images, initialised from ``previous`` (a checkpoint, or the run's ``init_from``)."""
    run_dir = Path(cfg.run_dir)
    stage_cfg = cfg.copy()
    OmegaConf.set_struct(stage_cfg, False)
    stage_cfg.stages = []
    stage_cfg.run_dir = str(run_dir / f"stage{k}")
    stage_cfg.init_from = previous
    stage_cfg.model.train_size = stage.train_size
    stage_cfg.trainer.max_epochs = stage.epochs
    if stage.train_images is not None:
        stage_cfg.data.max_train_images = stage.train_images
    stage_cfg.run_name = f"{cfg.run_name}-stage{k}"
    return stage_cfg


def finished_stage(stage_cfg: DictConfig, k: int) -> TrainResult | None:
    """The result of a stage finished in an earlier launch; ``None`` if it has not finished."""
    done = Path(stage_cfg.run_dir) / "train_result.json"
    if not done.is_file():
        return None
    result = TrainResult(**json.loads(done.read_text()))
    log.info("stage %d already trained: %s", k, result.last_checkpoint)
    return result
