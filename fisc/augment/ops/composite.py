"""Composite ops: they need another image of the data set (``needs_other = True``).

``Op.__call__`` draws that image from the provider it is given (the data module's, never a
global); ``apply(img, rng, other)`` receives it as an ``HxWx3 uint8`` array.
"""

from __future__ import annotations

import math

import numpy as np

from fisc.augment.ops.base import Op, OpConfigError, Param, register
from fisc.augment.ops.geometric import as_rgb, blend, bounded, resize_to


def _need(op: Op, other) -> np.ndarray:
    if other is None:
        raise OpConfigError(f"op {op.name!r} needs another image: give a provider")
    return as_rgb(other)


@register
class PasteOnto(Op):
    """The image scaled to ``size`` of the other image (the largest scale that fits, times
    ``size``) and pasted onto it at a random position at ``opacity``. The other image is
    first rescaled to the input's area (keeping its aspect ratio), so the output has about
    the input's resolution."""

    name = "paste_onto"
    needs_other = True
    params = {
        "size": Param((0.3, 0.8), lo=0.05, hi=1.0, intensity="down"),
        "opacity": Param((1.0, 1.0), lo=0.0, hi=1.0, intensity="down"),
    }

    @bounded
    def apply(self, img, rng, other=None):
        bg = _need(self, other)
        h, w = img.shape[:2]
        bh, bw = bg.shape[:2]
        k = math.sqrt(h * w / (bh * bw))
        bw, bh = max(8, round(bw * k)), max(8, round(bh * k))
        out = resize_to(bg, bw, bh).copy()
        f = self.uniform(rng, "size") * min(bw / w, bh / h)
        pw, ph = min(bw, max(1, round(w * f))), min(bh, max(1, round(h * f)))
        x, y = int(rng.integers(0, bw - pw + 1)), int(rng.integers(0, bh - ph + 1))
        blend(out, resize_to(img, pw, ph), self.uniform(rng, "opacity"), x, y)
        return out


@register
class OverlayImage(Op):
    """The other image scaled to ``size`` of the input (the largest scale that fits, times
    ``size``) and pasted onto the input at a random position at ``opacity``."""

    name = "overlay_image"
    needs_other = True
    params = {
        "size": Param((0.2, 0.6), lo=0.01, hi=1.0),
        "opacity": Param((0.5, 1.0), lo=0.0, hi=1.0),
    }

    @bounded
    def apply(self, img, rng, other=None):
        fg = _need(self, other)
        h, w = img.shape[:2]
        fh, fw = fg.shape[:2]
        f = self.uniform(rng, "size") * min(w / fw, h / fh)
        pw, ph = min(w, max(1, round(fw * f))), min(h, max(1, round(fh * f)))
        x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        out = img.copy()
        blend(out, resize_to(fg, pw, ph), self.uniform(rng, "opacity"), x, y)
        return out
