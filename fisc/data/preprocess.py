"""Per-image preprocessing: no step depends on any other image of the batch or the set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def normalise(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 tensor, ``(x/255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


def eval_tensor(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The evaluation input of one RGB image: resized to ``size x size`` (bilinear), normalised."""
    resized = img.resize((size, size), Image.BILINEAR) if img.size != (size, size) else img
    return normalise(np.array(resized, dtype=np.uint8), mean, std)
