"""What a training run sends to Weights & Biases besides Lightning's metrics: the whole
resolved config, summaries that keep the best validation scores, an id that a resumed run
keeps, and on request checkpoints as artifacts and ``wandb.watch``."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fisc.files import atomic_path

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"
# the summary of these keeps their best value, not the last (``define_metric``)
BEST_OF = {"val/micro_ap": "max", "val/recall_at_p90": "max", "val/recall_at_1": "max"}
# the best val/micro_ap over all launches of a run (summary only, see BestScoreSummary)
BEST_KEY = "val/best_micro_ap"


def wandb_run_id(run_dir: Path, fresh: bool = False) -> str:
    """The W&B run id of this run dir, kept in ``<run_dir>/wandb_run_id``: made on the first
    launch and reused by every launch that resumes training, so that it continues the same
    W&B run. ``fresh``: this launch trains from scratch, so it gets a new id (the old run's
    curves would otherwise restart at step 0 inside the same W&B run)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and not fresh:
        return path.read_text().strip()
    run_id = secrets.token_hex(6)  # W&B ids: lower-case letters and digits
    if path.is_file():
        log.info("training starts afresh in %s: new W&B run id %s", run_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(run_id + "\n")
    return run_id


class RunWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger``, which also, when its W&B run starts (rank 0 only):

    - records ``run_config`` (the resolved Hydra config, every group) as the run's config;
      the LightningModule's hyperparameters, which Lightning logs itself, go under ``module``
      (they would otherwise replace the config's ``model``, ``loss`` and ``optim``);
    - defines the summaries of :data:`BEST_OF` as their maximum.
    """

    def __init__(self, *, run_config: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.run_config = run_config or {}

    @property
    @rank_zero_experiment
    def experiment(self):
        starting = self._experiment is None
        run = super().experiment
        if starting:
            for key, summary in BEST_OF.items():
                run.define_metric(key, summary=summary)
            if self.run_config:
                run.config.update(self.run_config, allow_val_change=True)
        return run

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        super().log_hyperparams({"module": dict(params)})


class BestScoreSummary(Callback):
    """Keeps ``val/best_micro_ap`` in the W&B summary: the best validation μAP of the run over
    all its launches. (``val/micro_ap``'s ``max`` summary only covers the values one process
    logged: an offline run that resumes starts with an empty summary, and when it is synced its
    summary replaces the earlier launch's.) The best comes from the ``ModelCheckpoint`` that
    monitors it, whose best score a resumed launch restores from its checkpoint; written when
    training starts and after every validation."""

    def __init__(self, logger: WandbLogger, checkpoint, monitor: str = "val/micro_ap"):
        self.logger, self.checkpoint, self.monitor = logger, checkpoint, monitor

    def _write(self, trainer, current=None) -> None:
        scores = [float(s) for s in (self.checkpoint.best_model_score, current) if s is not None]
        if trainer.is_global_zero and scores:
            self.logger.experiment.summary[BEST_KEY] = max(scores)

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        # runs before ModelCheckpoint's own hook (Lightning calls checkpoints last): this
        # validation's score is not yet in best_model_score
        if not trainer.sanity_checking:
            self._write(trainer, trainer.callback_metrics.get(self.monitor))


def watch(logger: WandbLogger, module, log: str | None, log_freq: int) -> None:
    """``wandb.watch`` the descriptor model and the loss (whose parameters, e.g. ArcFace's
    class weights, train too) when ``log`` is gradients | parameters | all; nothing when it is
    None. Not the LightningModule itself: W&B samples parameters in forward hooks, and
    Lightning trains through ``training_step``, never calling the module's ``forward``."""
    if log is None:
        return
    logger.watch([module.model, module.loss], log=log, log_freq=log_freq, log_graph=False)
