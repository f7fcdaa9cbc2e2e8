"""Safe image decoding: every odd-but-valid image becomes RGB; every bad file raises an error
that names it.

Handled: grayscale, palette, CMYK, RGBA/LA (composited on white), 16-bit and float images
(rescaled to 8 bit), EXIF orientation (applied), decompression bombs (refused above
``max_pixels``), corrupt, truncated, zero-byte and non-image files (:class:`ImageDecodeError`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; DISC21 images are far smaller
_ALPHA_BACKGROUND = (255, 255, 255)


class ImageDecodeError(RuntimeError):
    """An image file that cannot be turned into an RGB picture; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str | None = None):
        # one-argument form: torch re-raises a DataLoader worker's error as type(e)(message)
        self.path = str(path)
        self.reason = reason
        super().__init__(self.path if reason is None else f"cannot decode image {path}: {reason}")


def _to_8bit_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else float(max(arr.max(), 1.0))
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> Image.Image:
    """Decode ``path`` fully into an RGB :class:`PIL.Image.Image`, or raise
    :class:`ImageDecodeError`. ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, much cheaper than decoding in full and resizing) as long as its
    shorter side stays at least ``min_side`` pixels; other formats decode in full."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageDecodeError(path, f"cannot read file ({e.strerror or e})") from e
    if size == 0:
        raise ImageDecodeError(path, "zero-byte file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(
                    path, f"{w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}"
                )
            if w == 0 or h == 0:
                raise ImageDecodeError(path, f"empty image {w}x{h}")
            if min_side is not None and img.format == "JPEG" and min(w, h) >= 2 * min_side:
                f = min_side / min(w, h)  # draft picks the smallest scale at least this size
                img.draft(img.mode, (math.ceil(w * f), math.ceil(h * f)))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
            img = ImageOps.exif_transpose(img)
            return _to_8bit_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(path, "not an image file (unidentified format)") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(path, f"{type(e).__name__}: {e}") from e
    except Image.DecompressionBombWarning as e:
        raise ImageDecodeError(path, f"decompression bomb: {e}") from e
