"""Training views: basic copy-detection edits on CPU (albumentations + fisc overlays).

Every view's randomness derives from ``(seed, epoch, index, view)`` alone, so replaying a
sample gives the same pixels whatever the worker, and epochs and views differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import numpy as np
from PIL import Image

from fisc.augment.edits import EDITS


@dataclass
class AugmentConfig:
    name: str = "basic"
    crop_scale: tuple[float, float] = (0.1, 1.0)  # area fraction kept by the random crop
    crop_ratio: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5  # probabilities of each edit
    color_jitter: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.3
    jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (20, 90)
    text: float = 0.2
    emoji: float = 0.2

    def __post_init__(self):
        for key in ("hflip", "color_jitter", "grayscale", "blur", "jpeg", "text", "emoji"):
            p = getattr(self, key)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment.{key} is a probability in [0, 1], got {p}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}"
            )


class ViewMaker:
    """Makes one augmented ``size x size`` uint8 view of an RGB image."""

    def __init__(self, cfg: AugmentConfig, size: int):
        self.cfg = cfg
        self.size = size
        self.pipeline = A.Compose(
            [
                A.RandomResizedCrop(
                    size=(size, size), scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio)
                ),
                A.HorizontalFlip(p=cfg.hflip),
                A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=cfg.color_jitter),
                A.ToGray(p=cfg.grayscale),
                A.GaussianBlur(sigma_limit=(0.5, 2.5), p=cfg.blur),
                A.ImageCompression(quality_range=tuple(cfg.jpeg_quality), p=cfg.jpeg),
            ]
        )

    def __call__(self, img: Image.Image, seed: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng(list(seed))
        if rng.random() < self.cfg.text:
            img = EDITS["text_overlay"](img, rng)
        if rng.random() < self.cfg.emoji:
            img = EDITS["emoji_overlay"](img, rng)
        self.pipeline.set_random_seed(int(rng.integers(2**31 - 1)))
        return self.pipeline(image=np.asarray(img.convert("RGB"), dtype=np.uint8))["image"]
