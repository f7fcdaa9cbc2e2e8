"""PNG galleries: every op at low and high intensity, and samples of each pipeline's views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from fisc.augment.ops import OPS
from fisc.augment.pipeline import AugmentConfig
from fisc.files import atomic_path

TILE = 128
LABEL = 14


def _tile(img: np.ndarray) -> Image.Image:
    h, w = img.shape[:2]
    s = TILE / max(h, w)
    small = cv2.resize(
        img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
    canvas = Image.new("RGB", (TILE, TILE), (245, 245, 245))
    canvas.paste(
        Image.fromarray(small), ((TILE - small.shape[1]) // 2, (TILE - small.shape[0]) // 2)
    )
    return canvas


def _grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], header: Sequence[str]) -> Image.Image:
    label_w = 120
    cols = max(len(r[1]) for r in rows)
    sheet = Image.new("RGB", (label_w + cols * TILE, LABEL + 4 + len(rows) * TILE), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(header):
        draw.text((label_w + c * TILE + 4, 2), text, fill="black")
    for r, (name, images) in enumerate(rows):
        y = LABEL + 4 + r * TILE
        draw.text((4, y + TILE // 2 - 6), name, fill="black")
        for c, img in enumerate(images):
            sheet.paste(_tile(img), (label_w + c * TILE, y))
    return sheet


def ops_gallery(sources: Sequence[np.ndarray], levels=(0.3, 1.0), seed: int = 0) -> Image.Image:
    """One row per op: the source, then the op at each level on each source."""

    def other(rng):  # composite ops paste with another source image
        return sources[int(rng.integers(len(sources)))]

    rows = []
    for name in sorted(OPS):
        images = []
        for s_idx, src in enumerate(sources):
            images.append(src)
            for level in levels:
                op = OPS[name].at(level)
                images.append(op(src, np.random.default_rng([seed, s_idx]), other))
        rows.append((name, images))
    header = [t for _ in sources for t in ("source", *(f"level {lv:g}" for lv in levels))]
    return _grid(rows, header)


def pipeline_gallery(
    configs: dict[str, AugmentConfig],
    source: np.ndarray,
    others: Sequence[np.ndarray],
    size: int = 160,
    samples: int = 6,
    seed: int = 0,
) -> Image.Image:
    """For each pipeline and view, ``samples`` views of one source (GPU stage applied on CPU)."""
    from fisc.augment.gpu import build_gpu_pipeline

    def other(rng):
        return others[int(rng.integers(len(others)))]

    rows = []
    for name, cfg in configs.items():
        for v, view in enumerate(cfg.build(size)[:2]):
            gpu = build_gpu_pipeline(view.view.gpu) if view.view.gpu else None
            images = []
            for i in range(samples):
                pixels, gpu_seed = view(source, np.random.default_rng([seed, 0, i, v]), other)
                if gpu is not None:
                    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
                    with torch.no_grad():
                        x = gpu(x, torch.tensor([gpu_seed]))
                    pixels = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                images.append(pixels)
            rows.append((f"{name} v{v}", images))
    return _grid(rows, [f"sample {i}" for i in range(samples)])


def save_png(img: Image.Image, path: str | Path) -> None:
    """Write as a 256-colour PNG (galleries live in the repository: keep them small)."""
    with atomic_path(path) as tmp:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            tmp, format="PNG", optimize=True
        )
