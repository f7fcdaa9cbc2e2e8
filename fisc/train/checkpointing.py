"""The checkpoints every run keeps: the best (``ModelCheckpoint`` on ``val/micro_ap``),
``last.ckpt`` (:class:`LastCheckpoint`), and with ``keep_every_n_epochs`` the history of a
learning curve; and the weights a fresh run starts from (``init_from``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from fisc.checkpoints import atomic_save, load_checkpoint
from fisc.train.config import ConfigError
from fisc.train.module import CopyDetectionModule

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: the state every ``every_n_steps`` optimizer steps, at the end of every
    epoch and after every validation during training, whatever the monitored metric did
    (Lightning's ``save_last`` rewrites it only when the best checkpoint changes). Written
    atomically by the trainer's checkpoint IO. (A ``Checkpoint``: Lightning runs its hooks after
    the other callbacks', so after validation it sees the best checkpoint just saved.)"""

    def __init__(self, dirpath: Path, every_n_steps: int | None = None):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and not _epoch_end(trainer):
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)

    def on_validation_end(self, trainer, pl_module) -> None:
        # after an epoch's validation too, so that last.ckpt knows the best checkpoint so far
        if trainer.training or (trainer.state.fn == "fit" and not trainer.sanity_checking):
            trainer.save_checkpoint(self.path)


def _epoch_end(trainer) -> bool:
    """The batch just trained is the epoch's last (its end-of-epoch save follows)."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return done >= trainer.num_training_batches


def checkpoint_bytes(module: torch.nn.Module) -> int:
    """About the size of one checkpoint: weights and buffers, plus two optimizer moments."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 3 * params + buffers


class StepSpan(pl.Callback):
    """The optimizer step a launch started training from (after any resume); none when the
    run was already finished (Lightning then skips the fit loop, and this hook)."""

    def __init__(self):
        self.first: int | None = None

    def on_train_start(self, trainer, pl_module):
        self.first = trainer.global_step

    def trained(self, trainer) -> bool:
        return self.first is not None and trainer.global_step > self.first


def load_initial_weights(module: CopyDetectionModule, path: str) -> None:
    """Model (strictly) and loss (e.g. ArcFace classes, possibly fewer) weights from a fisc
    checkpoint, for a fresh run that starts where another ended."""
    state = load_checkpoint(path, "init_from")["state_dict"]
    model = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    module.model.load_state_dict(model, strict=True)
    loss = {k[len("loss.") :]: v for k, v in state.items() if k.startswith("loss.")}
    for name in getattr(module.loss, "RUN_STATE", ()):  # e.g. a cross-batch memory starts empty
        loss.pop(name, None)
    if loss:
        module.loss.load_state_dict(loss, strict=True)
    log.info("initial weights from %s", path)


def best_checkpoint(ckpt_dir: Path, monitor: str | None) -> ModelCheckpoint:
    """The best checkpoint by ``monitor`` (``val/micro_ap``); without validation, the last
    epoch's."""
    return ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor=monitor,
        mode="max",
        save_top_k=1,
        filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )


def history_checkpoints(cfg: DictConfig, ckpt_dir: Path) -> list[ModelCheckpoint]:
    """With ``keep_every_n_epochs``: a checkpoint every N epochs, all kept, in
    ``checkpoints/history``; else none."""
    history = []
    if cfg.get("keep_every_n_epochs"):
        if int(cfg.keep_every_n_epochs) < 1:
            raise ConfigError(f"keep_every_n_epochs must be >= 1, got {cfg.keep_every_n_epochs}")
        history = [
            ModelCheckpoint(  # every N epochs, all kept: the points of a learning curve
                dirpath=ckpt_dir / "history",
                filename="epoch{epoch:03d}-step{step:06d}",
                auto_insert_metric_name=False,
                every_n_epochs=int(cfg.keep_every_n_epochs),
                save_top_k=-1,
                monitor=None,
                save_on_train_epoch_end=True,  # without waiting for a validation epoch
            )
        ]
    return history


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for fisc runs: atomic writes
    (:func:`~fisc.checkpoints.atomic_save`), safe reads (:func:`~fisc.checkpoints.load_checkpoint`:
    tensors and plain containers only)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, "checkpoint to resume")
