"""Lightning data module: two-view training batches and the validation query/reference sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fisc.augment.pipeline import AugmentConfig
from fisc.data.datasets import EvalImageDataset, TwoViewDataset
from fisc.data.disc21 import ImageSet
from fisc.inference import resolve_preprocess
from fisc.models.descriptor import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class ValidationSet:
    queries: ImageSet
    references: ImageSet
    ground_truth: dict[str, str | None]


class CopyDetectionDataModule(pl.LightningDataModule):
    """``batch_size`` is the global batch: each of the ``world_size`` devices gets its share."""

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
        self.train_set: TwoViewDataset | None = None
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
                self.train_images, self.view_pipelines, seed=self.seed, worker_gpu=worker_gpu
            )
        if self.trainer is not None:
            self.train_set.epoch = self.trainer.current_epoch
        # workers are re-created each epoch (not persistent) so they see the current epoch
        return DataLoader(
            self.train_set,
            batch_size=self.per_device_batch(),
            shuffle=True,
            drop_last=True,  # the loss needs equal batches on every rank
            num_workers=self.num_workers,
            persistent_workers=False,
        )

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
        return [
            DataLoader(
                EvalImageDataset(images, self.preprocess),
                batch_size=self.eval_batch_size,
                num_workers=self.num_workers,
            )
            for images in (self.validation.queries, self.validation.references)
        ]


def _gpu_pipeline(cfg: dict) -> torch.nn.Module | None:
    if not cfg:
        return None
    from fisc.augment.gpu_ops import build_gpu_pipeline

    return build_gpu_pipeline(cfg)
