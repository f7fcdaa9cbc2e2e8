"""The run's Lightning logger: CSV, or W&B (:mod:`fisc.train.wandb_run`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fisc.train.config import LoggerConfig

log = logging.getLogger(__name__)


def make_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    run_name: str,
    run_config: dict | None = None,
    fresh: bool = False,
):
    """The run's Lightning logger. W&B: ``run_config`` (the resolved config) becomes the run's
    config; the run id is kept in the run dir and reused unless ``fresh`` (training starts
    from scratch), so a resumed run continues its W&B run."""
    if cfg.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        # a new version_N per launch: a resumed run never overwrites earlier metrics
        return CSVLogger(save_dir=str(run_dir), name="csv")
    if cfg.kind == "wandb":
        from fisc.train.wandb_run import RunWandbLogger, wandb_run_id

        if cfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline | online | disabled, got {cfg.mode!r}")
        sweep = os.environ.get("WANDB_SWEEP_ID")
        if sweep and cfg.mode != "online":
            raise ValueError(
                f"a W&B sweep agent (sweep {sweep}) needs logger.mode=online to report "
                f"val/micro_ap to the sweep; got logger.mode={cfg.mode}"
            )
        if sweep:  # the agent picks the run id (W&B ignores ours): a relaunch is a new W&B run
            log.info("W&B sweep %s: the agent assigns the run id", sweep)
        return RunWandbLogger(
            run_config=run_config,
            project=cfg.project,
            name=run_name,
            save_dir=str(run_dir),
            group=cfg.group,
            tags=list(cfg.tags),
            # offline stays W&B's mode, not Lightning's ``offline=True``, which refuses
            # log_model: offline artifacts are kept with the run and uploaded by `wandb sync`
            mode=cfg.mode,
            log_model=cfg.log_model,
            id=None if sweep else wandb_run_id(run_dir, fresh=fresh),
            resume=None if sweep else "allow",
        )
    raise ValueError(f"logger.kind must be csv | wandb, got {cfg.kind!r}")
