"""Geometric ops (crop, pad, resize, aspect, rotate, rotate90, flips, perspective, skew), and
the helpers every CPU op shares: :func:`as_rgb`, :func:`fit_size`, :func:`bounded`,
:func:`resize_to`, :func:`blend`, :func:`random_color`.

Size rule: an op's output has both sides in ``[MIN_SIDE, MAX_SIDE]`` (8 and 2048 px). Every
``apply`` is wrapped in :func:`bounded`, which converts the input to ``HxWx3 uint8``, upscales
inputs with a side under ``MIN_SIDE``, and passes the output through :func:`fit_size`
(a rescale that keeps the aspect ratio where both bounds allow it).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from fisc.augment.ops.base import Op, Param, register

MIN_SIDE = 8
MAX_SIDE = 2048

_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC)


def as_rgb(img: np.ndarray) -> np.ndarray:
    """``img`` as ``HxWx3 uint8`` (gray is repeated, alpha dropped); the same array if it is."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        scale = 255.0 if img.dtype.kind == "f" and img.size and float(img.max()) <= 1.0 else 1.0
        img = np.clip(np.rint(img.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {img.shape}")
    return np.ascontiguousarray(img)


def resize_to(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize to ``w x h``, antialiased when shrinking: an integer-factor box filter (OpenCV's
    fast ``INTER_AREA`` path; up to factor - 1 edge pixels are dropped) then bilinear. The
    general ``INTER_AREA`` is 10-30x slower for non-integer factors."""
    ih, iw = img.shape[:2]
    if (w, h) == (iw, ih):
        return img
    k = min(iw // w, ih // h)
    if k >= 2:
        img = img[: (ih // k) * k, : (iw // k) * k]
        img = cv2.resize(img, (iw // k, ih // k), interpolation=cv2.INTER_AREA)
        if img.shape[:2] == (h, w):
            return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def fit_size(img: np.ndarray, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> np.ndarray:
    """Rescale so both sides lie in ``[min_side, max_side]``; ``img`` itself if they do.

    The aspect ratio is kept unless no single scale satisfies both bounds (e.g. 4x4000),
    in which case each side is clipped separately."""
    h, w = img.shape[:2]
    if min(h, w) >= min_side and max(h, w) <= max_side:
        return img
    s = max(min(1.0, max_side / max(h, w)), min_side / min(h, w))
    nh = int(np.clip(round(h * s), min_side, max_side))
    nw = int(np.clip(round(w * s), min_side, max_side))
    return resize_to(img, nw, nh)


def bounded(apply):
    """Decorator for ``Op.apply``: RGB uint8 in (tiny inputs upscaled to ``MIN_SIDE``), a new
    contiguous array within the size bounds out (never the input array itself)."""

    @functools.wraps(apply)
    def wrapper(self, img, rng, other=None):
        src = img
        img = as_rgb(img)
        if min(img.shape[:2]) < MIN_SIDE:
            img = fit_size(img)
        out = fit_size(np.ascontiguousarray(apply(self, img, rng, other)))
        if out is src or np.may_share_memory(out, src):
            out = out.copy()
        return out

    return wrapper


def shrink_to_fit(img: np.ndarray, growth_h: float, growth_w: float) -> np.ndarray:
    """``img``, first shrunk if an edit that multiplies its sides by ``growth_h`` /
    ``growth_w`` would leave ``MAX_SIDE`` (so no op builds a huge intermediate array)."""
    h, w = img.shape[:2]
    s = MAX_SIDE / max(h * growth_h, w * growth_w, 1e-9)
    if s >= 1.0:
        return img
    return resize_to(img, max(1, int(w * s)), max(1, int(h * s)))


def blend(dst: np.ndarray, src, alpha, x: int, y: int) -> None:
    """In place: ``dst[y:y+h, x:x+w] = src * alpha + dst * (1 - alpha)``, clipped to ``dst``.

    ``src`` is an ``hxwx3`` uint8 array or an RGB colour; ``alpha`` an ``hxw`` float32 array in
    [0, 1], or a number (then ``src`` must be an array). Uses ``cv2.blendLinear`` /
    ``cv2.addWeighted`` (10x faster than the numpy expression)."""
    h, w = alpha.shape[:2] if isinstance(alpha, np.ndarray) else src.shape[:2]
    H, W = dst.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    region = np.ascontiguousarray(dst[y0:y1, x0:x1])
    cut = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    if isinstance(src, np.ndarray):
        s = np.ascontiguousarray(src[cut])
    else:  # a solid image; bytes repetition is ~50x faster than numpy broadcasting here
        s = np.frombuffer(bytes(int(c) for c in src) * region.shape[0] * region.shape[1], np.uint8)
        s = s.reshape(region.shape)
    if isinstance(alpha, np.ndarray):
        a = np.ascontiguousarray(alpha[cut], dtype=np.float32)
        dst[y0:y1, x0:x1] = cv2.blendLinear(s, region, a, 1.0 - a)
    else:
        dst[y0:y1, x0:x1] = cv2.addWeighted(s, float(alpha), region, 1.0 - float(alpha), 0.0)


def random_color(rng: np.random.Generator, plain_p: float = 0.4) -> tuple[int, int, int]:
    """A fill colour: black or white with probability ``plain_p``, else uniform RGB."""
    if rng.random() < plain_p:
        v = 255 * int(rng.integers(2))
        return (v, v, v)
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return (r, g, b)


def _fill(op: Op, rng: np.random.Generator) -> tuple[int, int, int]:
    return (0, 0, 0) if rng.random() < op.values["black_p"] else random_color(rng, 0.3)


def _warp_flags(rng: np.random.Generator) -> int:
    """Nearest or bilinear at even odds: edit tools differ (AugLy's rotate is nearest)."""
    return cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


_BLACK_P = Param(0.5, lo=0.0, hi=1.0, intensity=None)  # fill: black with this probability


@register
class Crop(Op):
    """Keep a random window of ``area`` (fraction of the image area) whose aspect ratio is
    ``aspect`` (log-uniform) times the image's own."""

    name = "crop"
    params = {
        "area": Param((0.05, 0.9), lo=0.005, hi=1.0, intensity="down"),
        "aspect": Param((0.5, 2.0), lo=0.1, hi=10.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        area = self.uniform(rng, "area")
        lo, hi = self.values["aspect"]
        r = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        fw, fh = math.sqrt(area * r), math.sqrt(area / r)
        if fw > 1.0:
            fw, fh = 1.0, area
        elif fh > 1.0:
            fw, fh = area, 1.0
        cw, ch = max(1, min(w, round(w * fw))), max(1, min(h, round(h * fh)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img[y0 : y0 + ch, x0 : x0 + cw].copy()


@register
class Pad(Op):
    """Pad each side by its own fraction ``frac`` of the image side, with a solid colour or
    (probability ``reflect_p``) a mirror of the image."""

    name = "pad"
    params = {
        "frac": Param((0.02, 0.3), lo=0.0, hi=2.0),
        "reflect_p": Param(0.25, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        a, b = self.values["frac"]
        t, bt, l, r = rng.uniform(a, b, size=4) if b > a else (a,) * 4
        img = shrink_to_fit(img, 1.0 + t + bt, 1.0 + l + r)
        h, w = img.shape[:2]
        t, bt, l, r = (round(t * h), round(bt * h), round(l * w), round(r * w))
        if rng.random() < self.values["reflect_p"]:
            return cv2.copyMakeBorder(img, t, bt, l, r, cv2.BORDER_REFLECT_101)
        color = random_color(rng)
        return cv2.copyMakeBorder(img, t, bt, l, r, cv2.BORDER_CONSTANT, value=color)


@register
class Resize(Op):
    """Scale both sides by ``scale`` with a random interpolation (nearest/linear/area/cubic)."""

    name = "resize"
    params = {"scale": Param((0.3, 1.5), lo=0.01, hi=8.0, intensity="down")}

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        s = min(self.uniform(rng, "scale"), max(1.0, MAX_SIDE / max(h, w)))
        interp = _INTERPOLATIONS[int(rng.integers(len(_INTERPOLATIONS)))]
        return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


@register
class Aspect(Op):
    """Stretch (or squash, half of the time) one random axis by the factor ``stretch``."""

    name = "aspect"
    params = {"stretch": Param((1.15, 2.0), lo=1.0, hi=10.0)}

    @bounded
    def apply(self, img, rng, other=None):
        f = self.uniform(rng, "stretch") ** _sign(rng)
        horizontal = rng.random() < 0.5
        img = shrink_to_fit(img, 1.0 if horizontal else f, f if horizontal else 1.0)
        h, w = img.shape[:2]
        if horizontal:
            w = max(1, round(w * f))
        else:
            h = max(1, round(h * f))
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


@register
class Rotate(Op):
    """Rotate by ``angle`` degrees either way; ``expand`` grows the canvas to hold the whole
    image. The corners are filled black (probability ``black_p``) or with a random colour."""

    name = "rotate"
    params = {
        "angle": Param((3.0, 45.0), lo=0.0, hi=180.0),
        "expand": Param(True),
        "black_p": _BLACK_P,
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        angle = self.uniform(rng, "angle") * _sign(rng)
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        if self.values["expand"]:
            c, s = abs(m[0, 0]), abs(m[0, 1])
            nw, nh = int(math.ceil(w * c + h * s - 1e-6)), int(math.ceil(w * s + h * c - 1e-6))
            m[0, 2] += (nw - w) / 2.0
            m[1, 2] += (nh - h) / 2.0
            w, h = nw, nh
        return cv2.warpAffine(img, m, (w, h), flags=_warp_flags(rng), borderValue=_fill(self, rng))


@register
class Rotate90(Op):
    """Rotate by ``k`` quarter turns counter-clockwise (``k`` = 1 equals ``np.rot90(img)``)."""

    name = "rotate90"
    params = {"k": Param((1, 3), lo=1, hi=3, intensity=None)}
    _CODES = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}

    @bounded
    def apply(self, img, rng, other=None):
        return cv2.rotate(img, self._CODES[self.randint(rng, "k")])


@register
class HFlip(Op):
    """Mirror left-right (no randomness)."""

    name = "hflip"
    params = {}

    @bounded
    def apply(self, img, rng, other=None):
        return cv2.flip(img, 1)


@register
class VFlip(Op):
    """Mirror top-bottom (no randomness)."""

    name = "vflip"
    params = {}

    @bounded
    def apply(self, img, rng, other=None):
        return cv2.flip(img, 0)


@register
class Perspective(Op):
    """Move each corner by up to ``jitter`` of the image side in x and y (a random
    projective warp; the canvas keeps its size, uncovered parts are filled)."""

    name = "perspective"
    params = {"jitter": Param((0.05, 0.25), lo=0.0, hi=0.4), "black_p": _BLACK_P}

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        j = self.uniform(rng, "jitter")
        src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
        # each corner moves by j in a random direction, so the warp's strength is j itself
        phi = rng.uniform(0.0, 2.0 * np.pi, size=4)
        step = j * np.stack([np.cos(phi) * w, np.sin(phi) * h], axis=1)
        dst = (src + step).astype(np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        return cv2.warpPerspective(
            img, m, (w, h), flags=_warp_flags(rng), borderValue=_fill(self, rng)
        )


@register
class Skew(Op):
    """Shear one random axis by ``shear`` (x += shear * y, either sign); the canvas grows
    to hold the whole image."""

    name = "skew"
    params = {"shear": Param((0.1, 0.5), lo=0.0, hi=2.0), "black_p": _BLACK_P}

    @bounded
    def apply(self, img, rng, other=None):
        s = self.uniform(rng, "shear") * _sign(rng)
        horizontal = rng.random() < 0.5
        hh, ww = img.shape[:2]
        grow = (1.0, 1.0 + abs(s) * hh / ww) if horizontal else (1.0 + abs(s) * ww / hh, 1.0)
        img = shrink_to_fit(img, *grow)
        h, w = img.shape[:2]
        if horizontal:
            m = np.array([[1.0, s, max(0.0, -s) * h], [0.0, 1.0, 0.0]])
            size = (w + int(math.ceil(abs(s) * h)), h)
        else:
            m = np.array([[1.0, 0.0, 0.0], [s, 1.0, max(0.0, -s) * w]])
            size = (w, h + int(math.ceil(abs(s) * w)))
        return cv2.warpAffine(img, m, size, flags=_warp_flags(rng), borderValue=_fill(self, rng))
