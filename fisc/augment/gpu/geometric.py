"""Batched geometric GPU ops: flips, affine, perspective, resized crop (the GPU counterparts
of :mod:`fisc.augment.ops.geometric`; protocol in :mod:`.base`).

Transform matrices are built per sample on the CPU in float64 (so they are the same on every
device) and the batch is warped at once with kornia, output size = input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from kornia.geometry.transform import (
    crop_and_resize,
    get_affine_matrix2d,
    get_perspective_transform,
    warp_affine,
    warp_perspective,
)
from torch import Tensor

from fisc.augment.gpu.base import GpuOp, lerp
from fisc.augment.registry import Param, register


def _fill(x: Tensor, value: float) -> Tensor:
    return torch.full((x.shape[1],), float(value), device=x.device, dtype=x.dtype)


def _warp(warp: Callable[..., Tensor], x: Tensor, matrix: Tensor, fill: float) -> Tensor:
    """``x`` warped by kornia's ``warp`` (:func:`warp_affine` with (n, 2, 3) matrices or
    :func:`warp_perspective` with (n, 3, 3) ones) to its own size: bilinear,
    ``align_corners=True``, uncovered pixels set to ``fill`` (a grey level)."""
    return warp(
        x,
        matrix.to(x.dtype),
        tuple(x.shape[-2:]),
        mode="bilinear",
        padding_mode="fill",
        align_corners=True,
        fill_value=_fill(x, fill),
    )


def _corners(h: int, w: int, n: int) -> Tensor:
    """(n, 4, 2) pixel corners (x, y): top-left, top-right, bottom-right, bottom-left."""
    c = torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=torch.float64)
    return c.expand(n, 4, 2)


@register
class HFlip(GpuOp):
    name = "hflip"

    def apply(self, x, prm, keys):
        return torch.flip(x, dims=(-1,))


@register
class VFlip(GpuOp):
    name = "vflip"

    def apply(self, x, prm, keys):
        return torch.flip(x, dims=(-2,))


@register
class Affine(GpuOp):
    """Rotation (degrees, positive = counter-clockwise), isotropic scale, shear (degrees, x and
    y each drawn from the range) and translation (fraction of width / height, x and y each
    drawn), about the image centre; uncovered pixels get ``fill`` (grey level)."""

    name = "affine"
    params = {
        "rotation": Param((-15.0, 15.0), lo=-360.0, hi=360.0, intensity=None),
        "scale": Param((0.8, 1.2), lo=0.05, hi=20.0, intensity=None),
        "shear": Param((0.0, 0.0), lo=-80.0, hi=80.0, intensity=None),
        "translate": Param((0.0, 0.0), lo=-1.0, hi=1.0, intensity=None),
        "fill": Param(0.0, lo=0.0, hi=1.0),
    }
    n_draws = 6

    def sample(self, u, size):
        h, w = size
        v = self.values
        n = u.shape[0]
        scale = lerp(u[:, 1], v["scale"])[:, None].expand(n, 2)
        center = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64).expand(n, 2)
        shear = torch.deg2rad(lerp(u[:, 2:4], v["shear"]))
        shift = lerp(u[:, 4:6], v["translate"]) * torch.tensor([w, h], dtype=torch.float64)
        angle = -lerp(u[:, 0], v["rotation"])  # kornia's positive angle turns clockwise on screen
        m = get_affine_matrix2d(shift, center, scale, angle, shear[:, 0], shear[:, 1])
        return {"matrix": m[:, :2]}

    def apply(self, x, prm, keys):
        return _warp(warp_affine, x, prm["matrix"], self.values["fill"])


@register
class Perspective(GpuOp):
    """Each corner moves by up to ``jitter`` (a per-sample magnitude drawn from the range) times
    the image size, in x and y independently; uncovered pixels get ``fill``."""

    name = "perspective"
    params = {
        "jitter": Param((0.05, 0.2), lo=0.0, hi=0.5),
        "fill": Param(0.0, lo=0.0, hi=1.0),
    }
    n_draws = 9

    def sample(self, u, size):
        h, w = size
        n = u.shape[0]
        mag = lerp(u[:, 0], self.values["jitter"]).view(n, 1, 1)
        offset = (2 * u[:, 1:9].view(n, 4, 2) - 1) * mag
        src = _corners(h, w, n)
        dst = src + offset * torch.tensor([w - 1, h - 1], dtype=torch.float64)
        return {"matrix": get_perspective_transform(src, dst)}

    def apply(self, x, prm, keys):
        return _warp(warp_perspective, x, prm["matrix"], self.values["fill"])


@register
class ResizedCrop(GpuOp):
    """A box of ``area`` (fraction of the image) and aspect ratio ``ratio`` (w/h, drawn
    log-uniformly) at a uniform position, resized back to the input size. Like torchvision:
    up to 10 tries for a box that fits, else the first try clipped to the image."""

    name = "resized_crop"
    params = {
        "area": Param((0.25, 1.0), lo=0.001, hi=1.0, intensity="down"),
        "ratio": Param((3 / 4, 4 / 3), lo=0.05, hi=20.0, intensity=None),
    }
    tries = 10
    n_draws = 2 * tries + 2

    def sample(self, u, size):
        h_img, w_img = size
        t = self.tries
        area = lerp(u[:, :t], self.values["area"]) * h_img * w_img
        log_ratio = lerp(u[:, t : 2 * t], tuple(math.log(r) for r in self.values["ratio"]))
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt()
        h = (area / ratio).sqrt()
        fits = (w <= w_img) & (h <= h_img)
        first = torch.where(fits.any(1), fits.double().argmax(1), 0)[:, None]
        w = w.gather(1, first)[:, 0].clamp(1, w_img)
        h = h.gather(1, first)[:, 0].clamp(1, h_img)
        x0 = u[:, 2 * t] * (w_img - w)
        y0 = u[:, 2 * t + 1] * (h_img - h)
        x1, y1 = x0 + w - 1, y0 + h - 1  # inclusive pixel corners (kornia's convention)
        box = torch.stack([x0, y0, x1, y0, x1, y1, x0, y1], 1).view(-1, 4, 2)
        return {"box": box}

    def apply(self, x, prm, keys):
        box = prm["box"].to(x.dtype)
        return crop_and_resize(x, box, tuple(x.shape[-2:]), mode="bilinear", align_corners=True)
