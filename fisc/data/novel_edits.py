"""Edits that fisc never trains with: the minidisc novel-edits query split.

These functions are deliberately *not* ops of :mod:`fisc.augment.ops` (no pipeline config can
name them), so a model trained by fisc has never seen them. They cover three families, as the
challenge's Phase 2 added unseen edits of several kinds:

- geometric: ``lens`` (barrel or pincushion distortion), ``wave`` (sinusoidal warp);
- photometric: ``posterize`` (few grey levels per channel), ``solarize`` (tones above a
  threshold inverted), ``vignette`` (darkened corners, warm or cold tint);
- overlay: ``frame`` (a patterned border of random width and colours around the image).

Each is ``edit(img, rng) -> img`` on ``HxWx3 uint8`` RGB, with all randomness from ``rng``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Edit = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def lens(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Radial distortion ``r' = r (1 + k r²)``, k in ±[0.15, 0.45] (barrel or pincushion)."""
    h, w = img.shape[:2]
    k = float(rng.uniform(0.15, 0.45)) * (1 if rng.random() < 0.5 else -1)
    yy, xx = _grid(h, w)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    nx, ny = (xx - cx) / max(cx, 1), (yy - cy) / max(cy, 1)
    factor = 1 + k * (nx * nx + ny * ny)
    map_x = (nx * factor * max(cx, 1) + cx).astype(np.float32)
    map_y = (ny * factor * max(cy, 1) + cy).astype(np.float32)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def wave(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sinusoidal displacement along both axes: amplitude 2-6% of the side, 1-3 periods."""
    h, w = img.shape[:2]
    yy, xx = _grid(h, w)
    ax, ay = (float(rng.uniform(0.02, 0.06)) * s for s in (w, h))
    px, py = (float(rng.uniform(1, 3)) for _ in range(2))
    phase = rng.uniform(0, 2 * np.pi, size=2)
    map_x = xx + ax * np.sin(2 * np.pi * py * yy / h + phase[0])
    map_y = yy + ay * np.sin(2 * np.pi * px * xx / w + phase[1])
    return cv2.remap(
        img, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )  # fmt: skip


def posterize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each channel quantised to 2-4 bits (4 to 16 levels)."""
    bits = int(rng.integers(2, 5))
    step = 256 // (1 << bits)
    return ((img // step) * step + step // 2).astype(np.uint8)


def solarize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values above a threshold in [96, 192] inverted."""
    threshold = int(rng.integers(96, 193))
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def vignette(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corners darkened by 40-80% with a Gaussian falloff, then a warm or cold tint."""
    h, w = img.shape[:2]
    yy, xx = _grid(h, w)
    r2 = ((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2
    strength = float(rng.uniform(0.4, 0.8))
    mask = 1 - strength * (1 - np.exp(-r2 / float(rng.uniform(0.4, 0.9))))
    tint = np.array([1.1, 1.0, 0.85]) if rng.random() < 0.5 else np.array([0.85, 1.0, 1.1])
    out = img.astype(np.float32) * mask[..., None] * tint
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def frame(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A border 8-20% of the short side wide, striped or checkered in two random colours."""
    h, w = img.shape[:2]
    b = max(2, int(round(min(h, w) * float(rng.uniform(0.08, 0.2)))))
    c1, c2 = rng.integers(0, 256, size=(2, 3))
    H, W = h + 2 * b, w + 2 * b
    yy, xx = np.mgrid[0:H, 0:W]
    cell = max(2, b // int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        pattern = ((xx + yy) // cell) % 2 == 0  # diagonal stripes
    else:
        pattern = ((xx // cell) + (yy // cell)) % 2 == 0  # checkerboard
    out = np.where(pattern[..., None], c1, c2).astype(np.uint8)
    out[b : b + h, b : b + w] = img
    return out


NOVEL_EDITS: dict[str, Edit] = {
    "lens": lens,
    "wave": wave,
    "posterize": posterize,
    "solarize": solarize,
    "vignette": vignette,
    "frame": frame,
}
FAMILIES = {
    "geometric": ("lens", "wave"),
    "photometric": ("posterize", "solarize", "vignette"),
    "overlay": ("frame",),
}
