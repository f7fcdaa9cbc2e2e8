"""Per-image evaluation preprocessing: no step depends on any other image of the batch or set.

:class:`Preprocess` is the one description of how an image becomes a model input at inference
(size, resize policy, mean/std). It is resolved from a model's config in exactly one place,
:func:`resolve_preprocess`; everything else receives the object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from fisc.models.descriptor import ModelConfig

RESIZE_POLICY = "square resize, bilinear"


def normalise(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 tensor, ``(x/255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


@dataclass(frozen=True)
class Preprocess:
    """Evaluation input of one RGB image: resized to ``size x size`` (bilinear, aspect not
    kept), then ``(x/255 - mean) / std``."""

    size: int
    mean: Sequence[float]
    std: Sequence[float]

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"preprocessing size must be >= 1, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values, got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """The model input of one image at the configured size."""
        return self.at(img, self.size, self.size)

    def at(self, img: Image.Image, height: int, width: int) -> torch.Tensor:
        """The model input of one image at another resolution (runtime export checks)."""
        img = img.convert("RGB") if img.mode != "RGB" else img
        resized = (
            img.resize((width, height), Image.BILINEAR) if img.size != (width, height) else img
        )
        return normalise(np.array(resized, dtype=np.uint8), self.mean, self.std)

    def normalise_batch(self, x: torch.Tensor) -> torch.Tensor:
        """A ``(B, 3, H, W)`` float batch in [0, 1] -> model input (training views)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def card(self) -> dict:
        """What a model card or runtime card records about the input."""
        return {
            "eval_size": self.size,
            "resize": RESIZE_POLICY,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def resolve_preprocess(cfg: ModelConfig, size: int | None = None) -> Preprocess:
    """The evaluation preprocessing of a model config (``size`` overrides its eval size).
    The only place in fisc that reads ``eval_size``, ``mean`` and ``std`` to build a
    transform."""
    return Preprocess(size or cfg.eval_size, cfg.mean, cfg.std)
