"""Basic PIL image edits in the spirit of the DISC21 query edits.

Every edit has the signature ``edit(img, rng) -> img`` (``paste_onto`` takes a third
argument, the background): ``img`` is a PIL image (converted to RGB if it is not),
``rng`` a :class:`numpy.random.Generator` that supplies *all* randomness, so an edit is
deterministic for a seed. The result is a new RGB image whose sides are kept within
``[MIN_SIDE, MAX_SIDE]`` (rescaled if an edit would leave them).

:data:`EDITS` maps names to edits; :func:`random_edit_chain` applies a random chain.
Text and emoji overlays use AugLy's shipped fonts and twemoji images (see
:mod:`fisc.augment.overlay_assets`), never AugLy's augmentation functions.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Collection

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from fisc.augment import overlay_assets as assets

MIN_SIDE = 32
MAX_SIDE = 1024

Edit = Callable[..., Image.Image]
BackgroundProvider = Callable[[np.random.Generator], Image.Image]

EDITS: dict[str, Edit] = {}

_RESAMPLES = (
    Image.Resampling.NEAREST,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
)


def fit_bounds(img: Image.Image, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> Image.Image:
    """Rescale (keeping the aspect ratio where possible) so both sides are in bounds."""
    w, h = img.size
    if min(w, h) >= min_side and max(w, h) <= max_side:
        return img
    s = min(1.0, max_side / max(w, h))
    s = max(s, min_side / min(w, h))
    nw = int(np.clip(round(w * s), min_side, max_side))
    nh = int(np.clip(round(h * s), min_side, max_side))
    return img.resize((nw, nh), Image.Resampling.BILINEAR)


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def _register(fn: Edit) -> Edit:
    """Make ``fn`` an edit: RGB in, bounded RGB copy out; add it to :data:`EDITS`."""

    @functools.wraps(fn)
    def edit(img: Image.Image, rng: np.random.Generator, *args, **kwargs) -> Image.Image:
        out = fn(_as_rgb(img), rng, *args, **kwargs)
        out = fit_bounds(_as_rgb(out))
        return out.copy() if out is img else out

    EDITS[fn.__name__] = edit
    return edit


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def _uniform_int(rng: np.random.Generator, lo: float, hi: float) -> int:
    """A random integer in ``[min(lo, hi), max(lo, hi)]``."""
    lo, hi = sorted((int(round(lo)), int(round(hi))))
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------- geometric


@_register
def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 30-90% of each side, at a random position."""
    w, h = img.size
    fw, fh = rng.uniform(0.3, 0.9, size=2)
    cw, ch = max(1, round(w * fw)), max(1, round(h * fh))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch))


@_register
def resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scale by 0.3-1.5; half of the time also change the aspect ratio (x0.6-1.6)."""
    w, h = img.size
    scale = rng.uniform(0.3, 1.5)
    aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.6))) if rng.random() < 0.5 else 1.0
    sx, sy = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    resample = _RESAMPLES[int(rng.integers(len(_RESAMPLES)))]
    return img.resize((max(1, round(w * sx)), max(1, round(h * sy))), resample)


@_register
def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Free rotation by 2-30 degrees either way (canvas expanded), or by 90/180/270."""
    if rng.random() < 0.6:
        angle = float(rng.uniform(2.0, 30.0) * rng.choice([-1.0, 1.0]))
        fill = (0, 0, 0) if rng.random() < 0.5 else _color(rng)
        return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    ops = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    return img.transpose(ops[int(rng.integers(3))])


@_register
def hflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left-right (uses no randomness)."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@_register
def vflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror top-bottom (uses no randomness)."""
    return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


@_register
def paste_onto(img: Image.Image, rng: np.random.Generator, background: Image.Image) -> Image.Image:
    """Scale ``img`` to 30-70% of ``background`` and paste it there at a random position."""
    if background is None:
        raise ValueError("paste_onto needs a background image")
    bg = fit_bounds(_as_rgb(background)).copy()
    bw, bh = bg.size
    w, h = img.size
    f = rng.uniform(0.3, 0.7) * min(bw / w, bh / h)
    pw, ph = max(1, round(w * f)), max(1, round(h * f))
    x0, y0 = int(rng.integers(0, bw - pw + 1)), int(rng.integers(0, bh - ph + 1))
    bg.paste(img.resize((pw, ph), Image.Resampling.BILINEAR), (x0, y0))
    return bg


# --------------------------------------------------------------------------- photometric


@_register
def color(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation jitter (x0.5-1.6, saturation x0-2); 20% grayscale."""
    out = ImageEnhance.Brightness(img).enhance(rng.uniform(0.5, 1.6))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.5, 1.6))
    if rng.random() < 0.2:
        return ImageOps.grayscale(out).convert("RGB")
    return ImageEnhance.Color(out).enhance(rng.uniform(0.0, 2.0))


@_register
def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with radius 1-4 px."""
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 4.0))))


@_register
def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Encode and decode as JPEG at quality 5-40 (in memory)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(5, 41)))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


# --------------------------------------------------------------------------- overlays


def _random_text(rng: np.random.Generator, charset: tuple[str, ...]) -> str:
    latin = [c for c in charset if c in assets.ASCII_CHARS]
    words = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(2, 9))
        chars = [
            latin[int(rng.integers(len(latin)))]
            if latin and rng.random() < 0.5
            else charset[int(rng.integers(len(charset)))]
            for _ in range(n)
        ]
        words.append("".join(chars))
    sep = "\n" if rng.random() < 0.25 else " "
    return sep.join(words)


@_register
def text_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random text (some non-Latin where the font has it) in a random AugLy font,
    colour, size (6-25% of the shorter side), opacity and position."""
    fonts = assets.font_paths()
    path = fonts[int(rng.integers(len(fonts)))] if fonts else None
    text = _random_text(rng, assets.font_charset(path))
    w, h = img.size
    font = assets.load_font(path, max(6, round(rng.uniform(0.06, 0.25) * min(w, h))))
    fill = _color(rng) + (int(rng.integers(150, 256)),)
    stroke = int(rng.integers(1, 3)) if rng.random() < 0.3 else 0
    stroke_fill = _color(rng)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    try:
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    except (OSError, ValueError):  # a font FreeType or the layout engine cannot use
        font = assets.load_font(None, getattr(font, "size", 12))
        text = text.encode("ascii", "replace").decode()
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    tw, th = x1 - x0, y1 - y0
    x = _uniform_int(rng, -0.15 * tw, w - 0.85 * tw) - x0
    y = _uniform_int(rng, -0.15 * th, h - 0.85 * th) - y0
    draw.text((x, y), text, font=font, fill=fill, stroke_width=stroke, stroke_fill=stroke_fill)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


@_register
def emoji_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random AugLy twemoji, 15-50% of the shorter side, random opacity and position."""
    emojis = assets.emoji_paths()
    emoji = assets.emoji_image(emojis[int(rng.integers(len(emojis)))] if emojis else None)
    w, h = img.size
    size = max(4, round(rng.uniform(0.15, 0.5) * min(w, h)))
    emoji = emoji.resize((size, size), Image.Resampling.LANCZOS)
    opacity = rng.uniform(0.6, 1.0)
    alpha = np.asarray(emoji.getchannel("A"), dtype=np.float32) * opacity
    emoji.putalpha(Image.fromarray(alpha.round().astype(np.uint8)))
    x, y = int(rng.integers(0, max(0, w - size) + 1)), int(rng.integers(0, max(0, h - size) + 1))
    base = img.convert("RGBA")
    base.alpha_composite(emoji, (x, y))
    return base.convert("RGB")


# --------------------------------------------------------------------------- chains


def random_edit_chain(
    img: Image.Image,
    rng: np.random.Generator,
    n_edits: int,
    background_provider: BackgroundProvider | None = None,
    exclude: Collection[str] = (),
) -> tuple[Image.Image, list[str]]:
    """Apply ``n_edits`` distinct edits, chosen and ordered at random.

    ``paste_onto`` is a candidate only when ``background_provider`` is given; it is called
    with ``rng`` to produce the background. Names in ``exclude`` are never used. Returns
    the edited image and the names applied, in order.
    """
    unknown = set(exclude) - set(EDITS)
    if unknown:
        raise ValueError(f"unknown edits in exclude: {sorted(unknown)}")
    candidates = [
        n
        for n in EDITS
        if n not in exclude and (n != "paste_onto" or background_provider is not None)
    ]
    if not 0 <= n_edits <= len(candidates):
        raise ValueError(f"n_edits={n_edits} but only {len(candidates)} edits are available")
    names = [candidates[i] for i in rng.permutation(len(candidates))[:n_edits]]
    out = _as_rgb(img)
    for name in names:
        if name == "paste_onto":
            out = EDITS[name](out, rng, background_provider(rng))  # type: ignore[misc]
        else:
            out = EDITS[name](out, rng)
    return (out.copy() if out is img else out), names
