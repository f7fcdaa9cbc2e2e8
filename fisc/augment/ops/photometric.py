"""Photometric ops: blur, sharpen, noise, JPEG, pixelisation, pixel shuffling, colour edits.

Colour edits with a ``strength`` ``s`` scale by ``1 + s`` or ``1 / (1 + s)`` (even odds), so
the same strength brightens or darkens (raises or lowers contrast, saturation) equally in
log terms. Colour edits are affine colour maps applied in one ``cv2.transform`` pass
(:class:`ColorMap`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fisc.augment.ops.base import Op, OpConfigError, Param, register
from fisc.augment.ops.geometric import bounded, random_color
from fisc.data.decode import cv2_decode_rgb

_LUMA = np.array([0.299, 0.587, 0.114])  # OpenCV's RGB -> gray weights
_EYE = np.eye(3)


class ColorMap:
    """An affine colour map ``v -> A v + t`` built from edits, applied in one
    ``cv2.transform`` pass (a 3x4 matrix: faster than one LUT, and no clipping between
    edits). Contrast pivots on the mean gray of the image as mapped so far, tracked exactly
    from the input's mean colour."""

    def __init__(self, img: np.ndarray):
        self.A, self.t = _EYE.copy(), np.zeros(3)
        self.mean0 = np.array(cv2.mean(img)[:3])

    def brightness(self, f: float) -> ColorMap:
        self.A, self.t = f * self.A, f * self.t
        return self

    def contrast(self, f: float) -> ColorMap:
        m = float(_LUMA @ (self.A @ self.mean0 + self.t))
        self.A, self.t = f * self.A, f * self.t + (1.0 - f) * m
        return self

    def saturation(self, f: float) -> ColorMap:
        return self._then(f * _EYE + (1.0 - f) * np.outer(np.ones(3), _LUMA))

    def hue(self, turns: float) -> ColorMap:
        """The W3C ``feColorMatrix`` hueRotate matrix: rotation about the gray axis."""
        c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
        lum = np.array([0.213, 0.715, 0.072])
        m = np.outer(np.ones(3), lum) + c * (_EYE - np.outer(np.ones(3), lum))
        m += s * np.array([[-0.213, -0.715, 0.928], [0.143, 0.140, -0.283], [-0.787, 0.715, 0.072]])
        return self._then(m)

    def blend_towards(self, color, alpha: float) -> ColorMap:
        self.A, self.t = alpha * self.A, alpha * self.t + (1.0 - alpha) * np.asarray(color)
        return self

    def _then(self, m: np.ndarray) -> ColorMap:
        self.A, self.t = m @ self.A, m @ self.t
        return self

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return cv2.transform(img, np.hstack([self.A, self.t[:, None]]).astype(np.float32))


def _factor(strength: float, rng: np.random.Generator) -> float:
    return 1.0 + strength if rng.random() < 0.5 else 1.0 / (1.0 + strength)


def shift_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue by ``shift`` turns (fraction of the colour circle)."""
    k = round(shift * 256) % 256
    if k == 0:  # the HSV round trip is lossy: skip it when there is nothing to shift
        return img.copy()
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)  # hue on 0..255
    hsv[..., 0] += np.uint8(k)  # uint8 wraps around: mod 256
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL, dst=hsv)


def _signed(op: Op, rng: np.random.Generator, key: str) -> float:
    v = op.uniform(rng, key)
    return v if rng.random() < 0.5 else -v


@register
class Blur(Op):
    """Gaussian blur with standard deviation ``sigma`` pixels."""

    name = "blur"
    params = {"sigma": Param((0.6, 4.0), lo=0.0, hi=50.0)}

    @bounded
    def apply(self, img, rng, other=None):
        sigma = self.uniform(rng, "sigma")
        return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img.copy()


@register
class Sharpen(Op):
    """Unsharp mask: ``img + amount * (img - blur(img, radius))``."""

    name = "sharpen"
    params = {
        "amount": Param((0.5, 3.0), lo=0.0, hi=20.0),
        "radius": Param((0.8, 2.0), lo=0.3, hi=10.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        amount, radius = self.uniform(rng, "amount"), self.uniform(rng, "radius")
        blurred = cv2.GaussianBlur(img, (0, 0), radius)
        return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0.0)


@register
class Noise(Op):
    """Additive Gaussian noise of standard deviation ``std`` (0-255 scale); the same noise on
    all channels (monochrome) with probability ``gray_p``."""

    name = "noise"
    params = {
        "std": Param((4.0, 40.0), lo=0.0, hi=255.0),
        "gray_p": Param(0.2, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        std = self.uniform(rng, "std")
        h, w = img.shape[:2]
        gray = rng.random() < self.values["gray_p"]
        # OpenCV's (thread-local) generator, seeded from rng: 3x faster than numpy's normals
        cv2.setRNGSeed(int(rng.integers(1, 2**31)))
        c = 1 if gray else 3
        noise = np.empty((h, w, c), dtype=np.float32)
        cv2.randn(noise, (0.0,) * c, (std,) * c)
        if gray:
            noise = cv2.merge([noise, noise, noise])
        return cv2.add(img, noise, dtype=cv2.CV_8U)


@register
class Jpeg(Op):
    """Encode and decode as JPEG at ``quality`` (OpenCV's libjpeg, 4:2:0 chroma)."""

    name = "jpeg"
    params = {"quality": Param((5, 50), lo=1, hi=100, intensity="down")}

    @bounded
    def apply(self, img, rng, other=None):
        q = self.randint(rng, "quality")
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:  # pragma: no cover - libjpeg does not fail on uint8 RGB
            raise RuntimeError("JPEG encoding failed")
        return cv2_decode_rgb(buf)


@register
class Pixelize(Op):
    """Average over square blocks of side ``block`` x the shorter side (at least 2 px)."""

    name = "pixelize"
    params = {"block": Param((0.015, 0.08), lo=0.0, hi=1.0)}

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        b = max(2, round(self.uniform(rng, "block") * min(h, w)))
        small = cv2.resize(img, (-(-w // b), -(-h // b)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@register
class ShufflePixels(Op):
    """Permute a random ``fraction`` of the pixels among their own positions."""

    name = "shuffle_pixels"
    params = {"fraction": Param((0.05, 0.5), lo=0.0, hi=1.0)}

    @bounded
    def apply(self, img, rng, other=None):
        flat = img.reshape(-1, 3).copy()
        n = flat.shape[0]
        k = min(n, max(2, round(self.uniform(rng, "fraction") * n)))
        idx = rng.choice(n, size=k, replace=False)
        flat[idx] = flat[rng.permutation(idx)]
        return flat.reshape(img.shape)


@register
class Brightness(Op):
    """Multiply all values by ``1 + strength`` or its inverse."""

    name = "brightness"
    params = {"strength": Param((0.1, 0.7), lo=0.0, hi=10.0)}

    @bounded
    def apply(self, img, rng, other=None):
        return ColorMap(img).brightness(_factor(self.uniform(rng, "strength"), rng))(img)


@register
class Contrast(Op):
    """Scale deviations from the mean gray level by ``1 + strength`` or its inverse."""

    name = "contrast"
    params = {"strength": Param((0.1, 0.8), lo=0.0, hi=10.0)}

    @bounded
    def apply(self, img, rng, other=None):
        return ColorMap(img).contrast(_factor(self.uniform(rng, "strength"), rng))(img)


@register
class Saturation(Op):
    """Scale colour deviations from gray by ``1 + strength`` or its inverse."""

    name = "saturation"
    params = {"strength": Param((0.2, 1.5), lo=0.0, hi=20.0)}

    @bounded
    def apply(self, img, rng, other=None):
        return ColorMap(img).saturation(_factor(self.uniform(rng, "strength"), rng))(img)


@register
class Hue(Op):
    """Rotate the hue by ``shift`` turns, either way."""

    name = "hue"
    params = {"shift": Param((0.03, 0.5), lo=0.0, hi=0.5)}

    @bounded
    def apply(self, img, rng, other=None):
        return shift_hue(img, _signed(self, rng, "shift"))


@register
class ColorJitter(Op):
    """Brightness, contrast, saturation (strengths as in the single ops) and hue (turns,
    as a rotation about the gray axis), composed in a random order into one colour map."""

    name = "color_jitter"
    params = {
        "brightness": Param((0.05, 0.4), lo=0.0, hi=10.0),
        "contrast": Param((0.05, 0.4), lo=0.0, hi=10.0),
        "saturation": Param((0.05, 0.6), lo=0.0, hi=20.0),
        "hue": Param((0.0, 0.08), lo=0.0, hi=0.5),
    }

    @bounded
    def apply(self, img, rng, other=None):
        b = _factor(self.uniform(rng, "brightness"), rng)
        c = _factor(self.uniform(rng, "contrast"), rng)
        s = _factor(self.uniform(rng, "saturation"), rng)
        hshift = _signed(self, rng, "hue")
        cmap = ColorMap(img)
        steps = (
            lambda: cmap.brightness(b),
            lambda: cmap.contrast(c),
            lambda: cmap.saturation(s),
            lambda: cmap.hue(hshift),
        )
        for i in rng.permutation(4):
            steps[i]()
        return cmap(img)


@register
class Grayscale(Op):
    """Blend towards the luma image by ``amount`` (1 = fully gray, R == G == B)."""

    name = "grayscale"
    params = {"amount": Param((1.0, 1.0), lo=0.0, hi=1.0)}

    @bounded
    def apply(self, img, rng, other=None):
        a = self.uniform(rng, "amount")
        gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return gray if a >= 1.0 else cv2.addWeighted(gray, a, img, 1.0 - a, 0.0)


@register
class Opacity(Op):
    """Show the image at opacity ``alpha`` over a solid background of a random colour."""

    name = "opacity"
    params = {"alpha": Param((0.3, 0.85), lo=0.0, hi=1.0, intensity="down")}

    @bounded
    def apply(self, img, rng, other=None):
        a = self.uniform(rng, "alpha")
        return ColorMap(img).blend_towards(random_color(rng, 0.5), a)(img)


@register
class Channel(Op):
    """One channel edit, picked with the given relative weights: ``shuffle`` (a random
    non-identity channel order), ``drop`` (one channel set to 0) or ``invert`` (255 - x)."""

    name = "channel"
    params = {
        "shuffle": Param(1.0, lo=0.0, hi=100.0, intensity=None),
        "drop": Param(1.0, lo=0.0, hi=100.0, intensity=None),
        "invert": Param(1.0, lo=0.0, hi=100.0, intensity=None),
    }
    _ORDERS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

    def __init__(self, p: float = 1.0, **kwargs):
        super().__init__(p, **kwargs)
        if sum(float(self.values[k]) for k in self.params) <= 0:
            raise OpConfigError(f"{self.name}: shuffle, drop and invert weights are all 0")

    @bounded
    def apply(self, img, rng, other=None):
        w = np.array([float(self.values[k]) for k in ("shuffle", "drop", "invert")])
        mode = int(rng.choice(3, p=w / w.sum()))
        if mode == 0:
            order = self._ORDERS[int(rng.integers(len(self._ORDERS)))]
            return np.ascontiguousarray(img[:, :, order])
        if mode == 1:
            out = img.copy()
            out[:, :, int(rng.integers(3))] = 0
            return out
        return cv2.bitwise_not(img)
