"""torch Datasets over an :class:`ImageSet`: two augmented views for training, one
deterministic view for evaluation and extraction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from fisc.augment.views import AugmentConfig, ViewMaker
from fisc.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb
from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import eval_tensor, normalise

log = logging.getLogger(__name__)


class TwoViewDataset(Dataset):
    """Item ``i``: ``(view_a, view_b, i)``; each view's randomness is keyed by
    ``(seed, epoch, i, view)``. Set :attr:`epoch` before each epoch's workers start."""

    def __init__(
        self,
        images: ImageSet,
        augment: AugmentConfig,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
    ):
        self.images = images
        self.views = ViewMaker(augment, size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def view(self, index: int, view: int):
        img = load_rgb(self.images.paths[index])
        pixels = self.views(img, (self.seed, self.epoch, index, view))
        return normalise(pixels, self.mean, self.std)

    def __getitem__(self, index: int):
        return self.view(index, 0), self.view(index, 1), index


class EvalImageDataset(Dataset):
    """Item ``i``: ``(tensor, i, ok)``. A file that cannot be decoded raises
    :class:`ImageDecodeError`, or with ``on_error="skip"`` is logged and returned with
    ``ok=False`` and a zero tensor that the caller must drop."""

    def __init__(
        self,
        images: ImageSet,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        on_error: str = "raise",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.images = images
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.on_error = on_error
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            img = load_rgb(self.images.paths[index], self.max_pixels)
        except ImageDecodeError as e:
            if self.on_error == "raise":
                raise
            log.warning("skipping %s: %s", self.images.ids[index], e)
            return torch.zeros(3, self.size, self.size), index, False
        return eval_tensor(img, self.size, self.mean, self.std), index, True
