"""Batched photometric GPU ops: colour jitter, grayscale, blur, sharpen, noise (the GPU
counterparts of :mod:`fisc.augment.ops.photometric`; protocol in :mod:`.base`)."""

from __future__ import annotations

import math

import torch
from kornia import color, enhance, filters

from fisc.augment.gpu.base import GpuOp, lerp, mix_seed
from fisc.augment.registry import Param, register


# -- colour -----------------------------------------------------------------------------------
@register
class ColorJitter(GpuOp):
    """Brightness (multiply), contrast (blend with the mean grey), saturation (blend with the
    grey image), in that order, then hue (shift, in turns: 0.5 = half the colour wheel). A
    factor range of [1, 1] (hue [0, 0]) skips that adjustment."""

    name = "color_jitter"
    params = {
        "brightness": Param((0.6, 1.4), lo=0.0, hi=10.0),
        "contrast": Param((0.6, 1.4), lo=0.0, hi=10.0),
        "saturation": Param((0.6, 1.4), lo=0.0, hi=10.0),
        "hue": Param((-0.1, 0.1), lo=-0.5, hi=0.5, intensity=None),
    }
    n_draws = 4
    _steps = (
        ("brightness", 1.0, enhance.adjust_brightness_accumulative),
        ("contrast", 1.0, enhance.adjust_contrast_with_mean_subtraction),
        ("saturation", 1.0, enhance.adjust_saturation_with_gray_subtraction),
        ("hue", 0.0, enhance.adjust_hue),
    )

    def sample(self, u, size):
        out = {k: lerp(u[:, j], self.values[k]) for j, (k, _, _) in enumerate(self._steps)}
        out["hue"] = out["hue"] * (2 * torch.pi)  # kornia: radians
        return out

    def apply(self, x, prm, keys):
        for key, identity, fn in self._steps:
            if self.values[key] != (identity, identity):
                x = fn(x, prm[key])
        return x


@register
class Grayscale(GpuOp):
    name = "grayscale"

    def apply(self, x, prm, keys):
        return color.rgb_to_grayscale(x).expand(-1, 3, -1, -1).contiguous()


# -- filters ----------------------------------------------------------------------------------
@register
class Blur(GpuOp):
    """Gaussian blur, sigma (pixels) per sample; one kernel size for the batch, from the
    largest sigma the config allows (capped so reflect padding fits the image)."""

    name = "blur"
    params = {"sigma": Param((0.5, 3.0), lo=0.05, hi=50.0)}
    n_draws = 1

    def sample(self, u, size):
        return {"sigma": lerp(u[:, 0], self.values["sigma"])}

    def apply(self, x, prm, keys):
        k = 2 * math.ceil(3.0 * self.values["sigma"][1]) + 1
        k = min(k, 2 * min(x.shape[-2:]) - 1)  # reflect padding needs pad < size
        sigma = prm["sigma"].to(x.dtype)[:, None].expand(-1, 2)
        return filters.gaussian_blur2d(x, (k, k), sigma, border_type="reflect")


@register
class Sharpen(GpuOp):
    """PIL-style sharpness (kornia ``enhance.sharpness``): factor 1 = unchanged, >1 sharper,
    <1 smoother. The 1-pixel border is left as it was."""

    name = "sharpen"
    params = {"factor": Param((1.5, 4.0), lo=0.0, hi=50.0)}
    n_draws = 1

    def sample(self, u, size):
        return {"factor": lerp(u[:, 0], self.values["factor"])}

    def apply(self, x, prm, keys):
        return enhance.sharpness(x, prm["factor"].to(x.dtype))


@register
class Noise(GpuOp):
    """Additive Gaussian noise, std per sample (on the [0, 1] scale), independent per pixel and
    channel; the field comes from a per-sample generator on the batch's device."""

    name = "noise"
    params = {"std": Param((0.01, 0.08), lo=0.0, hi=1.0)}
    n_draws = 1

    def sample(self, u, size):
        return {"std": lerp(u[:, 0], self.values["std"])}

    def apply(self, x, prm, keys):
        gen = torch.Generator(device=x.device)
        fields = []
        for key in keys:
            gen.manual_seed(mix_seed(key, 0, salt=0x6E6F697365))
            fields.append(torch.randn(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype))
        return x + prm["std"].to(x.dtype).view(-1, 1, 1, 1) * torch.stack(fields)
