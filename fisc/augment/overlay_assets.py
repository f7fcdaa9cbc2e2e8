"""Fonts and emoji images for the overlay edits, found in the installed AugLy package.

Only AugLy's *files* are used (``augly/assets/fonts/*.ttf`` with the ``*.pkl`` lists of
code points each font covers, and ``augly/assets/twemojis/**/*.png``); none of AugLy's
augmentation code is imported or called. Lists are built once, lazily, and sorted so that
an index drawn from a seeded generator always names the same file.

When the assets cannot be found the overlay edits fall back to PIL's default font and a
drawn smiley (see :func:`fallback_emoji`), and a warning is logged once.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import os
import pickle
import string
import unicodedata
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

ENV_ASSETS_DIR = "FISC_AUGLY_ASSETS"  # optional override of the AugLy assets folder
ASCII_CHARS = string.ascii_letters + string.digits + string.punctuation


@functools.lru_cache(maxsize=1)
def augly_assets_dir() -> Path | None:
    """``.../site-packages/augly/assets`` (or ``$FISC_AUGLY_ASSETS``), ``None`` if absent."""
    override = os.environ.get(ENV_ASSETS_DIR)
    if override:
        return Path(override) if Path(override).is_dir() else None
    try:
        spec = importlib.util.find_spec("augly")  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "assets"
        if candidate.is_dir():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """All ``.ttf`` fonts shipped with AugLy, sorted by file name; empty if none."""
    root = augly_assets_dir()
    paths = tuple(sorted((root / "fonts").glob("*.ttf"))) if root else ()
    if not paths:
        log.warning("AugLy fonts not found; text overlays use PIL's default font")
    return paths


@functools.lru_cache(maxsize=1)
def emoji_paths() -> tuple[Path, ...]:
    """All twemoji ``.png`` files shipped with AugLy, sorted by relative path; empty if none."""
    root = augly_assets_dir()
    paths: tuple[Path, ...] = ()
    if root is not None and (root / "twemojis").is_dir():
        base = root / "twemojis"
        paths = tuple(sorted(base.rglob("*.png"), key=lambda p: p.relative_to(base).as_posix()))
    if not paths:
        log.warning("AugLy emoji images not found; emoji overlays use a drawn smiley")
    return paths


class _IntListUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: AugLy's ``.pkl`` files are plain lists of ints."""

    def find_class(self, module: str, name: str):  # pragma: no cover - only on bad files
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _printable(cp: int) -> bool:
    if cp < 0x21 or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return False
    return unicodedata.category(chr(cp)) not in {
        "Cc",
        "Cf",
        "Cs",
        "Cn",
        "Zs",
        "Zl",
        "Zp",
        "Mn",
        "Me",
    }


@functools.lru_cache(maxsize=512)
def font_charset(path: Path | None) -> tuple[str, ...]:
    """Printable characters the font covers (sorted), from AugLy's ``<font>.pkl`` list.

    Falls back to printable ASCII when the list is missing or unreadable.
    """
    if path is not None:
        pkl = Path(path).with_suffix(".pkl")
        try:
            with open(pkl, "rb") as fh:
                codes = _IntListUnpickler(io.BytesIO(fh.read())).load()
            chars = tuple(chr(c) for c in sorted({int(c) for c in codes}) if _printable(int(c)))
            if chars:
                return chars
        except (OSError, pickle.UnpicklingError, TypeError, ValueError, EOFError):
            pass
    return tuple(ASCII_CHARS)


@functools.lru_cache(maxsize=256)
def load_font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font of ``size`` px; PIL's default font when ``path`` is None or cannot be read."""
    size = max(4, int(size))
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:
            log.warning("cannot read font %s; using PIL's default font", path)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=128)
def _load_emoji(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGBA")


def emoji_image(path: Path | None) -> Image.Image:
    """The emoji at ``path`` as RGBA (a copy), or the drawn fallback when ``path`` is None."""
    if path is None:
        return fallback_emoji()
    try:
        return _load_emoji(path).copy()
    except OSError:
        log.warning("cannot read emoji %s; using a drawn smiley", path)
        return fallback_emoji()


def fallback_emoji(size: int = 72) -> Image.Image:
    """A yellow circle face drawn with PIL (RGBA, transparent outside the circle)."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    s = size
    d.ellipse(
        (1, 1, s - 2, s - 2),
        fill=(255, 204, 77, 255),
        outline=(102, 69, 0, 255),
        width=max(1, s // 36),
    )
    eye = s // 10
    for cx in (s * 0.35, s * 0.65):
        d.ellipse(
            (cx - eye / 2, s * 0.3, cx + eye / 2, s * 0.3 + eye * 1.6), fill=(102, 69, 0, 255)
        )
    d.arc(
        (s * 0.25, s * 0.3, s * 0.75, s * 0.78),
        start=20,
        end=160,
        fill=(102, 69, 0, 255),
        width=max(1, s // 18),
    )
    return im
