"""Batched occlusion GPU ops: random erasing, one box of one colour per sample (the GPU
counterpart of :mod:`fisc.augment.ops.overlay`'s occlusions; protocol in :mod:`.base`)."""

from __future__ import annotations

import math

import torch

from fisc.augment.gpu.base import GpuOp, lerp
from fisc.augment.registry import Param, register


@register
class Erasing(GpuOp):
    """Fills one axis-aligned box per sample with a random colour: area a fraction of the
    image, aspect ratio (w/h) drawn log-uniformly, position uniform."""

    name = "erasing"
    params = {
        "area": Param((0.02, 0.33), lo=0.0, hi=1.0),
        "ratio": Param((0.3, 3.3), lo=0.05, hi=20.0, intensity=None),
    }
    n_draws = 7

    def sample(self, u, size):
        h_img, w_img = size
        area = lerp(u[:, 0], self.values["area"]) * h_img * w_img
        ratio = lerp(u[:, 1], tuple(math.log(r) for r in self.values["ratio"])).exp()
        h = (area / ratio).sqrt().round().clamp(1, h_img)
        w = (area * ratio).sqrt().round().clamp(1, w_img)
        y0 = torch.minimum((u[:, 2] * (h_img - h + 1)).floor(), h_img - h)
        x0 = torch.minimum((u[:, 3] * (w_img - w + 1)).floor(), w_img - w)
        return {"box": torch.stack([y0, x0, y0 + h, x0 + w], 1), "colour": u[:, 4:7]}

    def apply(self, x, prm, keys):
        h, w = x.shape[-2:]
        box = prm["box"].view(-1, 4, 1, 1)
        ys = torch.arange(h, device=x.device, dtype=box.dtype).view(1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=box.dtype).view(1, 1, w)
        inside = (ys >= box[:, 0]) & (ys < box[:, 2]) & (xs >= box[:, 1]) & (xs < box[:, 3])
        return torch.where(inside[:, None], prm["colour"].to(x.dtype).view(-1, 3, 1, 1), x)
