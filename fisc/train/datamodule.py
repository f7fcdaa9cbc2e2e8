"""Lightning data module: two-view training batches and the validation query/reference sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler

from fisc.augment.pipeline import AugmentConfig
from fisc.data.datasets import EvalImageDataset, TwoViewDataset, one_opencv_thread_per_worker
from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import resolve_preprocess
from fisc.models.descriptor import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class ValidationSet:
    queries: ImageSet
    references: ImageSet
    ground_truth: dict[str, str | None]


class CopyDetectionDataModule(pl.LightningDataModule):
    """``batch_size`` is the global batch: each of the ``world_size`` devices gets its share."""

    # workers compute on one OpenCV thread each (see one_opencv_thread_per_worker); a
    # benchmark turns it off to measure what it buys
    pin_opencv_threads = True

    def __init__(
        self,
        train_images: ImageSet,
        validation: ValidationSet | None,
        augment: AugmentConfig,
        model: ModelConfig,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int = 64,
        skip_log: Path | None = None,
        decode_min_side: int | None = None,
    ):
        super().__init__()
        self.train_images = train_images
        self.validation = validation
        self.augment = augment
        self.model_cfg = model
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.skip_log = skip_log  # undecodable training images: skipped and listed there
        self.decode_min_side = decode_min_side or None  # 0: decode in full
        self.train_set: TwoViewDataset | None = None
        self.sampler: EpochSampler | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) of a resumed run
        self.resumed_at: tuple[int, int] | None = None  # where the resumed training order goes on
        self.view_pipelines = augment.build(model.train_size)  # config errors: now, not mid-epoch
        self.gpu_pipelines = [_gpu_pipeline(v.view.gpu) for v in self.view_pipelines]
        self.gpu_on_device = False
        # the inference pipeline's preprocessing: validation inputs, training-view normalisation
        self.preprocess = resolve_preprocess(model)

    def _decide_gpu_stage(self) -> bool:
        stage = self.augment.gpu_stage
        if stage == "auto":
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            return device is not None and device.type == "cuda"
        return stage == "device"

    def per_device_batch(self) -> int:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world_size:
            raise ValueError(
                f"global batch_size {self.batch_size} is not divisible by {world_size} devices"
            )
        per_device = self.batch_size // world_size
        if per_device > len(self.train_images):
            raise ValueError(
                f"per-device batch {per_device} exceeds the "
                f"{len(self.train_images)} training images"
            )
        return per_device

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.gpu_on_device = self._decide_gpu_stage()
            if any(g is not None for g in self.gpu_pipelines):
                log.info(
                    "augmentation GPU stage runs %s",
                    "on the device after transfer"
                    if self.gpu_on_device
                    else "per sample in the DataLoader workers",
                )
            worker_gpu = None if self.gpu_on_device else self.gpu_pipelines
            self.train_set = TwoViewDataset(
                self.train_images,
                self.view_pipelines,
                seed=self.seed,
                worker_gpu=worker_gpu,
                skip_log=self.skip_log,
                min_side=self.decode_min_side,
            )
        per_device = self.per_device_batch()
        t = self.trainer
        rank, world, epoch = (t.global_rank, t.world_size, t.current_epoch) if t else (0, 1, 0)
        self.sampler = EpochSampler(len(self.train_set), self.seed, rank=rank, world_size=world)
        self.sampler.set_epoch(epoch)
        if self._resume is not None:  # a run resumed mid-epoch: where its epoch stopped
            saved_epoch, batches = self._resume
            self._resume = None
            if batches >= len(self.sampler) // per_device:  # saved at the epoch's end (drop_last)
                saved_epoch, batches = saved_epoch + 1, 0
            self.resumed_at = (saved_epoch, batches)
            self.sampler.set_epoch(saved_epoch)
            self.sampler.skip = batches * per_device
        if self.pin_opencv_threads:
            one_opencv_thread_per_worker(self.num_workers)
        # persistent workers: forked once, not at every epoch (a fork shares the training
        # process's memory copy-on-write, so each page the step then writes is copied; kernel
        # time of a 3-epoch demo 86 s -> 58 s, weights bit-identical). The sampler yields the
        # epoch with each index, so workers started at any epoch draw the right views. The
        # loader's own generator keeps the global RNG (which the step draws from) out of it.
        return DataLoader(
            self.train_set,
            batch_size=per_device,
            sampler=self.sampler,
            drop_last=True,  # the loss needs equal batches on every rank
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    # Lightning saves these in every checkpoint and restores them before the training loader
    # is built (its own loader-state mechanism runs too late when the LR schedule has asked
    # for the number of steps first, as fisc's does)
    def state_dict(self) -> dict:
        if self.sampler is None or self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.sampler.epoch, "batches": int(done)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches"]))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches: the views' GPU stage (when on the device), then normalisation."""
        if self.trainer is None or not self.trainer.training:
            return batch
        view_a, view_b, seeds, index = batch
        out = []
        for v, pixels in enumerate((view_a, view_b)):
            x = pixels.float().div_(255.0)
            gpu = self.gpu_pipelines[v]
            if self.gpu_on_device and gpu is not None:
                x = gpu(x, seeds[:, v])
            out.append(self.preprocess.normalise_batch(x))
        return out[0], out[1], index

    def val_dataloader(self) -> list[DataLoader]:
        if self.validation is None:
            return []
        if self.pin_opencv_threads:
            one_opencv_thread_per_worker(self.num_workers)
        return [
            DataLoader(
                EvalImageDataset(images, self.preprocess),
                batch_size=self.eval_batch_size,
                num_workers=self.num_workers,
                generator=torch.Generator(),  # validation leaves the global RNG untouched
            )
            for images in (self.validation.queries, self.validation.references)
        ]


class EpochSampler(Sampler):
    """Training order: a permutation keyed by ``(seed, epoch)`` (no global RNG), this rank's
    share of it (every ``world_size``-th index from ``rank``), starting ``skip`` indices in
    (a run resumed mid-epoch). Yields ``(epoch, index)``: the dataset keys the augmentation
    randomness by the epoch the index was drawn for, whenever its workers were started."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before every epoch
        if epoch != self.epoch:
            self.skip = 0  # a resume position holds for the epoch it was saved in only
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        mine = order[self.rank : self.world_size * len(self) : self.world_size]
        skip, self.skip = self.skip, 0
        epoch = self.epoch
        for index in mine[skip:].tolist():
            yield epoch, index


class TooManyBadImagesError(RuntimeError):
    """More training images could not be decoded than ``data.max_bad_fraction`` allows."""


class ResumeCheck(Callback):
    """A resumed run goes on where its checkpoint stopped, or not at all: when training starts,
    Lightning's epoch must be the epoch the data order was saved in, and its optimizer step
    count the steps of the epochs before plus the batches done in this one. Otherwise (a
    checkpoint whose loop state disagrees with its data position, or data of another size than
    the run was trained on) the relaunch would silently train another run than the one
    interrupted: it stops with the figures instead."""

    def on_train_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        at = getattr(dm, "resumed_at", None)
        if at is None:
            return
        dm.resumed_at = None
        epoch, batches = at
        per_epoch = int(trainer.num_training_batches)
        if batches >= per_epoch:  # the epoch had ended (limit_train_batches can end it early)
            epoch, batches = epoch + 1, 0
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        expected = (epoch * per_epoch + batches) // accumulate
        if trainer.current_epoch == epoch and trainer.global_step == expected:
            log.info("resumed at epoch %d, batch %d of %d (step %d)", epoch, batches,
                     per_epoch, expected)  # fmt: skip
            return
        raise RuntimeError(
            f"cannot resume exactly: the checkpoint's data order stopped at epoch {epoch}, "
            f"batch {batches} of {per_epoch} (step {expected} if every epoch had {per_epoch} "
            f"batches), but Lightning would go on at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}. Either the checkpoint's loop state disagrees with its data "
            f"position, or the training data changed size since the run started. Nothing was "
            f"trained or overwritten; start afresh (ckpt_path=null or another run_dir), or from "
            f"its weights with init_from=<checkpoint>"
        )


class SkippedImages(Callback):
    """Reads the list of skipped training images (``skip_log``, appended by the data
    workers) after every step: logs each image once, and stops the run when more than
    ``max_fraction`` of the ``n_images`` are listed."""

    def __init__(self, skip_log: Path, n_images: int, max_fraction: float):
        self.skip_log = Path(skip_log)
        self.n_images = n_images
        self.max_fraction = max_fraction
        self.allowed = int(max_fraction * n_images)
        self.seen: dict[str, str] = {}
        self._size = 0

    def check(self) -> None:
        size = self.skip_log.stat().st_size if self.skip_log.is_file() else 0
        if size == self._size:
            return
        self._size = size
        for line in self.skip_log.read_text(encoding="utf-8").splitlines():
            path, _, reason = line.partition("\t")
            if path and path not in self.seen:
                self.seen[path] = reason
                log.warning("skipped training image %s (%s); listed in %s", path, reason,
                            self.skip_log)  # fmt: skip
        if len(self.seen) > self.allowed:
            shown = "\n".join(f"  {p}: {r}" for p, r in list(self.seen.items())[:20])
            raise TooManyBadImagesError(
                f"{len(self.seen)} of {self.n_images} training images cannot be decoded, more "
                f"than data.max_bad_fraction={self.max_fraction} allows ({self.allowed}); "
                f"all listed in {self.skip_log}:\n{shown}"
            )

    def on_train_start(self, trainer, pl_module) -> None:
        self.check()  # a resumed run counts what its earlier launches skipped

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.check()

    def on_train_end(self, trainer, pl_module) -> None:
        self.check()
        if self.seen:
            log.warning("%d training images were skipped: %s", len(self.seen), self.skip_log)


def _gpu_pipeline(cfg: dict) -> torch.nn.Module | None:
    if not cfg:
        return None
    from fisc.augment.gpu import build_gpu_pipeline

    return build_gpu_pipeline(cfg)
