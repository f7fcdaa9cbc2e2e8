"""Lightning data module: two-view training batches and the validation query/reference sets."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from fisc.augment.views import AugmentConfig
from fisc.data.datasets import EvalImageDataset, TwoViewDataset
from fisc.data.disc21 import ImageSet
from fisc.models.descriptor import ModelConfig


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
        m = self.model_cfg
        if self.train_set is None:
            self.train_set = TwoViewDataset(
                self.train_images, self.augment, m.train_size, m.mean, m.std, seed=self.seed
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

    def val_dataloader(self) -> list[DataLoader]:
        if self.validation is None:
            return []
        m = self.model_cfg
        return [
            DataLoader(
                EvalImageDataset(images, m.eval_size, m.mean, m.std),
                batch_size=self.eval_batch_size,
                num_workers=self.num_workers,
            )
            for images in (self.validation.queries, self.validation.references)
        ]
