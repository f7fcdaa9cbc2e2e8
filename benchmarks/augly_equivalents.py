"""The closest AugLy call for each fisc CPU op, for the side-by-side throughput benchmark.

:data:`AUGLY_EQUIVALENTS` maps a fisc op name to ``fn(img, rng, other=None) -> PIL image``
that calls ``augly.image``'s functional API with parameters drawn from ``rng`` over ranges
similar to the op's defaults. Composite ops take the other image as ``other``; without one
they use a mirrored copy of ``img`` (the cost of one PIL transpose). :data:`SKIPPED` names
the ops left out and why (checked against the installed AugLy, Pillow and numpy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import augly.image as imaug
import numpy as np
from PIL import Image, ImageOps

from fisc.augment import overlay_assets as assets

AuglyFn = Callable[..., Image.Image]

SKIPPED: dict[str, str] = {
    "perspective": "augly.image.perspective_transform uses np.float (removed in numpy 1.24)",
    "meme": "augly.image.meme_format calls FreeTypeFont.getsize_multiline (removed in Pillow 10)",
    "hue": "AugLy has no hue shift (color_jitter has no hue factor)",
    "channel": "AugLy has no channel shuffle / drop / invert",
}


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _factor(rng: np.random.Generator, a: float, b: float) -> float:
    s = _u(rng, a, b)
    return 1.0 + s if rng.random() < 0.5 else 1.0 / (1.0 + s)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return (r, g, b)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _other(img: Image.Image, other: Image.Image | None) -> Image.Image:
    return other if other is not None else ImageOps.mirror(img)


def _crop(img, rng, other=None):
    area, r = _u(rng, 0.05, 0.9), math.exp(_u(rng, math.log(0.5), math.log(2.0)))
    fw, fh = min(1.0, math.sqrt(area * r)), min(1.0, math.sqrt(area / r))
    x1, y1 = _u(rng, 0.0, 1.0 - fw), _u(rng, 0.0, 1.0 - fh)
    return imaug.crop(img, x1=x1, y1=y1, x2=min(1.0, x1 + fw), y2=min(1.0, y1 + fh))


def _text(img, rng, other=None):
    fonts = assets.font_paths()
    kwargs = dict(
        text=[int(v) for v in rng.integers(0, 1000, size=int(rng.integers(3, 21)))],
        font_size=_u(rng, 0.06, 0.2),
        opacity=_u(rng, 0.5, 1.0),
        color=_color(rng),
        x_pos=_u(rng, 0.0, 0.8),
        y_pos=_u(rng, 0.0, 0.8),
    )
    for _ in range(5):  # Raqm rejects some (font, text) pairs: draw another font
        try:
            return imaug.overlay_text(img, font_file=str(_pick(rng, fonts)), **kwargs)
        except (OSError, RuntimeError):
            continue
    return imaug.overlay_text(img, **kwargs)  # AugLy's default font


def _emoji(img, rng, other=None):
    return imaug.overlay_emoji(
        img,
        emoji_path=str(_pick(rng, assets.emoji_paths())),
        opacity=_u(rng, 0.5, 1.0),
        emoji_size=_u(rng, 0.1, 0.45),
        x_pos=_u(rng, 0.0, 0.8),
        y_pos=_u(rng, 0.0, 0.8),
    )


def _screenshot(img, rng, other=None):
    root = assets.augly_assets_dir()
    templates = sorted((root / "screenshot_templates").glob("*.png")) if root else []
    kwargs = {"template_filepath": str(_pick(rng, templates))} if templates else {}
    return imaug.overlay_onto_screenshot(img, **kwargs)


AUGLY_EQUIVALENTS: dict[str, AuglyFn] = {
    # geometric
    "crop": _crop,
    "pad": lambda img, rng, other=None: imaug.pad(
        img, w_factor=_u(rng, 0.02, 0.3), h_factor=_u(rng, 0.02, 0.3), color=_color(rng)
    ),
    "resize": lambda img, rng, other=None: imaug.scale(img, factor=_u(rng, 0.3, 1.5)),
    "aspect": lambda img, rng, other=None: imaug.change_aspect_ratio(
        img, ratio=_factor(rng, 0.15, 1.0) * img.width / img.height
    ),
    "rotate": lambda img, rng, other=None: imaug.rotate(
        img, degrees=_u(rng, 3.0, 45.0) * _pick(rng, (-1.0, 1.0))
    ),
    "rotate90": lambda img, rng, other=None: imaug.rotate(
        img, degrees=90 * int(rng.integers(1, 4))
    ),
    "hflip": lambda img, rng, other=None: imaug.hflip(img),
    "vflip": lambda img, rng, other=None: imaug.vflip(img),
    "skew": lambda img, rng, other=None: imaug.skew(
        img, skew_factor=_u(rng, 0.1, 0.5) * _pick(rng, (-1.0, 1.0)), axis=int(rng.integers(2))
    ),
    # photometric
    "blur": lambda img, rng, other=None: imaug.blur(img, radius=_u(rng, 0.6, 4.0)),
    "sharpen": lambda img, rng, other=None: imaug.sharpen(img, factor=1.0 + _u(rng, 0.5, 3.0)),
    "noise": lambda img, rng, other=None: imaug.random_noise(
        img, var=(_u(rng, 4.0, 40.0) / 255.0) ** 2, seed=int(rng.integers(2**31))
    ),
    "jpeg": lambda img, rng, other=None: imaug.encoding_quality(
        img, quality=int(rng.integers(5, 51))
    ),
    "pixelize": lambda img, rng, other=None: imaug.pixelization(
        img, ratio=1.0 / max(2.0, _u(rng, 0.015, 0.08) * min(img.size))
    ),
    "shuffle_pixels": lambda img, rng, other=None: imaug.shuffle_pixels(
        img, factor=_u(rng, 0.05, 0.5), seed=int(rng.integers(2**31))
    ),
    "brightness": lambda img, rng, other=None: imaug.brightness(img, factor=_factor(rng, 0.1, 0.7)),
    "contrast": lambda img, rng, other=None: imaug.contrast(img, factor=_factor(rng, 0.1, 0.8)),
    "saturation": lambda img, rng, other=None: imaug.saturation(img, factor=_factor(rng, 0.2, 1.5)),
    "color_jitter": lambda img, rng, other=None: imaug.color_jitter(
        img,
        brightness_factor=_factor(rng, 0.05, 0.4),
        contrast_factor=_factor(rng, 0.05, 0.4),
        saturation_factor=_factor(rng, 0.05, 0.6),
    ),
    "grayscale": lambda img, rng, other=None: imaug.grayscale(img),
    "opacity": lambda img, rng, other=None: imaug.opacity(img, level=_u(rng, 0.3, 0.85)),
    # overlays
    "text": _text,
    "emoji": _emoji,
    "stripes": lambda img, rng, other=None: imaug.overlay_stripes(
        img,
        line_width=_u(rng, 0.1, 0.8),
        line_color=_color(rng),
        line_angle=_u(rng, 0.0, 180.0),
        line_density=_u(rng, 0.15, 0.6),
        line_type=_pick(rng, ("solid", "solid", "solid", "dashed", "dotted")),
        line_opacity=_u(rng, 0.4, 1.0),
    ),
    "screenshot": _screenshot,
    # composites (other image of the data set, or a mirrored copy)
    "paste_onto": lambda img, rng, other=None: imaug.overlay_onto_background_image(
        img,
        background_image=_other(img, other),
        overlay_size=_u(rng, 0.3, 0.8),
        opacity=1.0,
        x_pos=_u(rng, 0.0, 0.2),
        y_pos=_u(rng, 0.0, 0.2),
    ),
    "overlay_image": lambda img, rng, other=None: imaug.overlay_image(
        img,
        overlay=_other(img, other),
        overlay_size=_u(rng, 0.2, 0.6),
        opacity=_u(rng, 0.5, 1.0),
        x_pos=_u(rng, 0.0, 0.4),
        y_pos=_u(rng, 0.0, 0.4),
    ),
}


def _check(size: int = 224, seeds: int = 3) -> dict[str, str]:
    """Run every equivalent on a random image; {name: error} for those that fail."""
    errors = {}
    for name, fn in AUGLY_EQUIVALENTS.items():
        for s in range(seeds):
            rng = np.random.default_rng(s)
            img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            try:
                out = fn(img, rng)
                assert isinstance(out, Image.Image), type(out)
            except Exception as e:  # noqa: BLE001 - report every failure
                errors[name] = f"{type(e).__name__}: {e}"
                break
    return errors


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    print(
        f"{len(AUGLY_EQUIVALENTS)} equivalents, {len(SKIPPED)} skipped; font dir ok:",
        Path(str(assets.augly_assets_dir())).is_dir(),
    )
    print("failures:", _check() or "none")
