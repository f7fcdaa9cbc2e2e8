"""The probe images of an artifact (``probe/``): the fixed images its golden descriptors
are computed on, by default synthetic ones from a seeded rng."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fisc.data.disc21 import ImageSet, list_images

N_PROBE = 8
PROBE_SEED = 20210601


def synthetic_probe_images(folder: Path, n: int = N_PROBE, seed: int = PROBE_SEED) -> ImageSet:
    """Write ``n`` deterministic synthetic RGB images (PNG) to ``folder``: gradients,
    rectangles and noise of varied sizes and aspect ratios, from a seeded numpy rng."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(48, 160, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.empty((h, w, 3), dtype=np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-1, 1, size=3)
            img[..., c] = 127.5 + 100 * np.sin(a * xx / 9 + b * yy / 7 + 3 * phase)
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            y1, x1 = y0 + int(rng.integers(4, h - y0)), x0 + int(rng.integers(4, w - x0))
            img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 12, size=img.shape)
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"probe_{i:02d}.png")
    return list_images(folder)


def _copy_probe(images: ImageSet, folder: Path) -> ImageSet:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, path in zip(images.ids, images.paths, strict=True):
        if "/" in image_id or "\\" in image_id:
            raise ValueError(f"probe image ids must be plain file names, got {image_id!r}")
        shutil.copyfile(path, folder / f"{image_id}{Path(path).suffix.lower()}")
    return list_images(folder)
