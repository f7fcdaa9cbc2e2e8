"""Overlay ops: text, emoji, stripes, meme caption bar, social-media screenshot frame.

Fonts and emoji images are AugLy's shipped assets (:mod:`fisc.augment.overlay_assets`).
Text is rendered with PIL into a small 8-bit coverage mask the size of the text box, then
alpha-blended into the image with OpenCV (:func:`~fisc.augment.ops.geometric.blend`), so the
cost scales with the text, not the image. Fonts are cached per (file, size); sizes are
rounded to steps of about 10%.
"""

from __future__ import annotations

import functools
import math
import re
import string
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from fisc.augment import overlay_assets as assets
from fisc.augment.glyphs import ANCHORS, font, line_ink, text_length
from fisc.augment.ops.base import Op, Param, register
from fisc.augment.ops.geometric import blend, bounded, random_color, resize_to

_LETTERS = string.ascii_letters


# ------------------------------------------------------------------------------ helpers


def quantize_px(px: float) -> int:
    """A font size in px rounded to a ~10% step (bounded cache), at least 6."""
    px = max(6.0, float(px))
    return int(round(1.1 ** round(math.log(px, 1.1))))


@functools.lru_cache(maxsize=1024)
def _chars(path: Path | None) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(all printable chars, ASCII ones, emoji / pictographic ones) the font covers."""
    allc = assets.font_charset(path)
    asc = tuple(c for c in allc if c in assets.ASCII_CHARS)
    emo = tuple(c for c in allc if 0x1F300 <= ord(c) <= 0x1FAFF or 0x2600 <= ord(c) <= 0x27BF)
    return allc, asc, emo


@functools.lru_cache(maxsize=1)
def emoji_fonts() -> tuple[Path, ...]:
    """AugLy fonts with many emoji / pictographs (Noto Emoji, Noto Sans Symbols 1/2)."""
    cands = [p for p in assets.font_paths() if re.search("Emoji|Symbols", p.name)]
    return tuple(p for p in cands if len(_chars(p)[2]) >= 50)


@functools.lru_cache(maxsize=4)
def latin_fonts(style: str) -> tuple[Path | None, ...]:
    """Fonts that cover all ASCII letters: ``"bold"`` display faces or ``"ui"`` sans faces."""
    pattern = {
        "bold": r"^(Impact|LeagueSpartan-Bold|Chunkfive|Montserrat-(Black|ExtraBold|Bold)|"
        r"Raleway-(Black|ExtraBold)|OpenSans-ExtraBold|SourceSansPro-Black|Ubuntu-B)\.",
        "ui": r"^(OpenSans|Montserrat|Ubuntu|NotoSans|IBMPlexSans|SourceSansPro|Titillium)"
        r"-(Regular|Semibold|SemiBold|Medium|Bold|R|M|B)\.",
    }[style]
    found = tuple(
        p
        for p in assets.font_paths()
        if re.search(pattern, p.name) and set(_LETTERS) <= set(_chars(p)[1])
    )
    return found or (None,)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _place(rng: np.random.Generator, size: int, extent: int, parts: int) -> int:
    """A uniform random start for an item of ``size`` px along an image side of ``extent`` px,
    such that at most about ``1/parts`` of the item falls outside, either end."""
    lo = -size // parts
    return int(rng.integers(lo, max(lo + 1, extent - ((parts - 1) * size) // parts)))


def text_mask(text: str, path: Path | None, px: int, kept: bool = True) -> np.ndarray:
    """The 8-bit coverage mask of ``text`` in the font at ``path``, ``px`` px, cropped to its
    ink; newlines separate lines, each drawn on its own and stacked left-aligned with a gap of
    a fifth of the font size. A line is what Pillow draws at ``(px, px // 2)`` on a canvas
    sized from the font size (2 em per character, 2.5 em high; ink beyond it is cut, and
    measuring the line first would cost a FreeType pass), composed from kept glyphs where
    :func:`fisc.augment.glyphs.line_ink` can (the same pixels) unless ``kept`` is false."""
    masks = []
    for line in text.split("\n"):
        w, h = len(line) * 2 * px + 2 * px, int(2.5 * px) + 2  # the canvas
        drawn = line_ink(line, path, px, (px, px // 2)) if kept else None
        if drawn is None:  # Pillow draws it
            im = Image.new("L", (w, h), 0)
            ImageDraw.Draw(im).text((px, px // 2), line, fill=255, font=font(path, px))
            m = np.asarray(im)
        else:
            ink, x, y = drawn
            if ink is None:
                continue
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + ink.shape[1], w), min(y + ink.shape[0], h)
            if x1 <= x0 or y1 <= y0:
                continue
            m = ink[y0 - y : y1 - y, x0 - x : x1 - x]  # cropped again below if cut
        x, y, cw, ch = cv2.boundingRect(m)
        if cw and ch:
            masks.append(m[y : y + ch, x : x + cw])
    if len(masks) <= 1:
        return masks[0] if masks else np.zeros((1, 1), np.uint8)
    gap = max(1, round(0.2 * px))
    out = np.zeros(
        (sum(m.shape[0] for m in masks) + gap * (len(masks) - 1), max(m.shape[1] for m in masks)),
        np.uint8,
    )
    y = 0
    for m in masks:
        out[y : y + m.shape[0], : m.shape[1]] = m
        y += m.shape[0] + gap
    return out


def safe_text_mask(text: str, path: Path | None, px: int, kept: bool = True) -> np.ndarray:
    """:func:`text_mask` with the font at ``path``; PIL's default font and ASCII text if
    FreeType rejects the font or the string."""
    try:
        return text_mask(text, path, px, kept)
    except (OSError, ValueError, RuntimeError):
        return text_mask(text.encode("ascii", "replace").decode(), None, px, kept)


def draw_text(
    d: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    fill: tuple[int, int, int],
    path: Path | None,
    px: int,
    anchor: str = "la",
) -> None:
    """``d.text(xy, text, fill, font(path, px), anchor)``: a line at a left anchor composed
    from kept glyphs where :func:`fisc.augment.glyphs.line_ink` can (the same pixels) and drawn
    with ``d.bitmap``; anything else (several lines, another anchor) drawn by Pillow."""
    one_line = "\n" not in text and anchor in ANCHORS
    drawn = line_ink(text, path, px, xy, anchor) if one_line else None
    if drawn is None:
        d.text(xy, text, fill=fill, font=font(path, px), anchor=anchor)
    elif drawn[0] is not None:
        ink, x, y = drawn
        d.bitmap((x, y), Image.fromarray(ink), fill=fill)


def outline(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` grown by ``r`` px on every side (a text outline of width ``r``)."""
    padded = cv2.copyMakeBorder(mask, r, r, r, r, cv2.BORDER_CONSTANT, value=0)
    return cv2.dilate(padded, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))


def random_words(rng: np.random.Generator, n_words: int, lo: int = 2, hi: int = 9) -> str:
    words = []
    for _ in range(n_words):
        n = int(rng.integers(lo, hi + 1))
        words.append("".join(_LETTERS[i] for i in rng.integers(0, len(_LETTERS), size=n)))
    text = " ".join(words)
    r = rng.random()
    return text.upper() if r < 0.3 else text.lower() if r < 0.6 else text


# --------------------------------------------------------------------------------- ops


@register
class Text(Op):
    """Random characters from a random AugLy font (any script it covers; Latin mixed in
    where it has it), ``size`` x the shorter side, ``length`` characters (wrapped to fit),
    random colour, ``opacity``, position and (``stroke_p``) outline. With probability
    ``emoji_p`` the font is one with emoji / pictographs and the text mixes them in."""

    name = "text"
    params = {
        "size": Param((0.06, 0.2), lo=0.01, hi=1.0),
        "length": Param((3, 20), lo=1, hi=200),
        "opacity": Param((0.5, 1.0), lo=0.0, hi=1.0),
        "emoji_p": Param(0.15, lo=0.0, hi=1.0, intensity=None),
        "stroke_p": Param(0.2, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        use_emoji = rng.random() < self.values["emoji_p"] and bool(emoji_fonts())
        path = _pick(rng, emoji_fonts() if use_emoji else assets.font_paths() or (None,))
        allc, asc, emo = _chars(path)
        px = quantize_px(self.uniform(rng, "size") * min(h, w))
        n = self.randint(rng, "length")
        per_line = max(1, int(1.3 * w / (0.6 * px)))
        max_lines = max(1, int(1.2 * h / (1.2 * px)))
        n = min(n, per_line * max_lines)
        src = rng.random(n)
        picks = rng.random(n)
        chars = []
        for i in range(n):
            if use_emoji and emo and src[i] < 0.5:
                pool = emo
            else:
                pool = asc if asc and src[i] > 0.7 else allc
            chars.append(pool[int(picks[i] * len(pool))])
            if i + 1 < n and rng.random() < 0.12:
                chars.append(" ")
        text = "".join(chars).strip() or chars[0]
        text = "\n".join(text[i : i + per_line] for i in range(0, len(text), per_line))
        stroke = max(1, px // 14) if rng.random() < self.values["stroke_p"] else 0
        out = img.copy()
        opacity = self.uniform(rng, "opacity")
        color = random_color(rng, 0.4)
        # random characters from fonts of up to thousands of glyphs: mostly seen once, so
        # keeping glyphs would cost more than it saves (measured); Pillow draws every line
        mask = safe_text_mask(text, path, px, kept=False)
        fill = mask.astype(np.float32) * np.float32(opacity / 255.0)
        mh, mw = fill.shape
        x, y = _place(rng, mw, w, 5), _place(rng, mh, h, 5)
        if stroke:
            edge = outline(mask, stroke).astype(np.float32) * np.float32(opacity / 255.0)
            dark = sum(color) > 384
            blend(out, (0, 0, 0) if dark else (255, 255, 255), edge, x - stroke, y - stroke)
        blend(out, color, fill, x, y)
        return out


@functools.lru_cache(maxsize=1024)
def _emoji_premultiplied(path: Path | None) -> np.ndarray:
    """The emoji as uint8 RGBA with RGB premultiplied by alpha (no dark fringes on resize)."""
    rgba = np.array(assets.emoji_image(path), dtype=np.uint16)
    rgba[..., :3] = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
    return rgba.astype(np.uint8)


@register
class Emoji(Op):
    """An AugLy twemoji of side ``size`` x the shorter image side at ``opacity``, at a random
    position (up to a quarter of it may fall outside)."""

    name = "emoji"
    params = {
        "size": Param((0.1, 0.45), lo=0.01, hi=1.0),
        "opacity": Param((0.5, 1.0), lo=0.0, hi=1.0),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        paths = assets.emoji_paths()
        emoji = _emoji_premultiplied(_pick(rng, paths) if paths else None)
        s = max(2, round(self.uniform(rng, "size") * min(h, w)))
        emoji = resize_to(emoji, s, s)
        alpha = emoji[..., 3].astype(np.float32) * np.float32(1.0 / 255.0)
        rgb = emoji[..., :3] / np.maximum(alpha, 1e-3)[..., None]  # back to straight alpha
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        alpha *= np.float32(self.uniform(rng, "opacity"))
        x, y = _place(rng, s, w, 4), _place(rng, s, h, 4)
        out = img.copy()
        blend(out, rgb, alpha, x, y)
        return out


@register
class Stripes(Op):
    """Parallel lines at a random angle: line ``width`` x the shorter side, ``density`` =
    fraction of the image the lines cover, ``opacity``, random colour; dashed with
    probability ``dashed_p``."""

    name = "stripes"
    params = {
        "width": Param((0.01, 0.05), lo=0.001, hi=0.5),
        "density": Param((0.15, 0.6), lo=0.01, hi=1.0),
        "opacity": Param((0.4, 1.0), lo=0.0, hi=1.0),
        "dashed_p": Param(0.25, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        lw = max(1.0, self.uniform(rng, "width") * min(h, w))
        period = max(lw + 1.0, lw / self.uniform(rng, "density"))
        theta = rng.uniform(0.0, np.pi)
        normal = np.array([math.cos(theta), math.sin(theta)])
        along = np.array([-normal[1], normal[0]])
        half = math.hypot(w, h) / 2 + lw
        starts = np.arange(-half - rng.uniform(0.0, period), half, period)
        if rng.random() < self.values["dashed_p"]:
            dash = max(2.0, lw * rng.uniform(1.0, 6.0))
            a = np.arange(-half - rng.uniform(0.0, 2 * dash), half, 2 * dash)
        else:
            dash, a = 2 * half, np.array([-half])
        d, a = (v.ravel() for v in np.meshgrid(starts, a, indexing="ij"))
        corners = [(d, a), (d + lw, a), (d + lw, a + dash), (d, a + dash)]
        centre = np.array([w / 2.0, h / 2.0])
        pts = np.stack([centre + np.outer(u, normal) + np.outer(v, along) for u, v in corners], 1)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, np.round(pts * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
        alpha = mask.astype(np.float32) * np.float32(self.uniform(rng, "opacity") / 255.0)
        out = img.copy()
        blend(out, random_color(rng, 0.5), alpha, 0, 0)
        return out


@register
class Meme(Op):
    """A caption bar of height ``bar`` x the image height added on top, a solid colour
    (white with probability ``white_p``) with 1-4 random words in a bold Latin font."""

    name = "meme"
    params = {
        "bar": Param((0.15, 0.4), lo=0.02, hi=2.0),
        "white_p": Param(0.8, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        bh = max(8, round(self.uniform(rng, "bar") * h))
        bg = (255, 255, 255) if rng.random() < self.values["white_p"] else random_color(rng, 0)
        fg = (0, 0, 0) if sum(bg) > 384 else (255, 255, 255)
        out = np.empty((h + bh, w, 3), np.uint8)
        out[:bh] = bg
        out[bh:] = img
        path = _pick(rng, latin_fonts("bold"))
        text = random_words(rng, int(rng.integers(1, 5)))
        width32 = max(1.0, text_length(text, path, 32))  # advance width at 32 px
        px = max(6, int(min(0.5 * bh, 0.92 * w * 32 / width32)))
        mask = safe_text_mask(text, path, px)
        mh, mw = mask.shape
        blend(out, fg, mask.astype(np.float32) / 255.0, (w - mw) // 2, (bh - mh) // 2)
        return out


@register
class Screenshot(Op):
    """A social-media post frame: a top bar (avatar circle, user name, menu dots), the image
    scaled to ``scale`` x the frame width, a bottom bar (icons, likes, caption); top bar
    height ``bar`` x the frame width; dark theme with probability ``dark_p``. The frame is as
    wide as the input image."""

    name = "screenshot"
    params = {
        "scale": Param((0.75, 1.0), lo=0.1, hi=1.0, intensity="down"),
        "bar": Param((0.08, 0.16), lo=0.02, hi=0.5),
        "dark_p": Param(0.3, lo=0.0, hi=1.0, intensity=None),
    }

    @bounded
    def apply(self, img, rng, other=None):
        h, w = img.shape[:2]
        dark = rng.random() < self.values["dark_p"]
        bg = (0, 0, 0) if dark and rng.random() < 0.5 else (18, 18, 18) if dark else (255,) * 3
        fg, dim = ((245,) * 3, (160,) * 3) if dark else ((38,) * 3, (142,) * 3)
        iw = max(1, round(self.uniform(rng, "scale") * w))
        ih = max(1, round(h * iw / w))
        top = max(8, round(self.uniform(rng, "bar") * w))
        bottom = max(8, round(top * rng.uniform(1.3, 2.2)))
        mx = (w - iw) // 2
        canvas = Image.new("RGB", (w, top + ih + bottom), bg)
        d = ImageDraw.Draw(canvas)
        # top bar: avatar, name, menu dots
        r = top * rng.uniform(0.25, 0.36)
        cx, cy = max(mx, 2) + r + 1, top / 2
        if rng.random() < 0.5:  # story ring
            d.ellipse((cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2), outline=(225, 48, 108))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=random_color(rng, 0))
        ui = _pick(rng, latin_fonts("ui"))
        name = random_words(rng, 1, 4, 12).lower() + ("_" if rng.random() < 0.3 else "")
        draw_text(d, (cx + r + top * 0.25, cy), name, fg, ui, quantize_px(top * 0.3), "lm")
        for k in range(3):
            dx = w - max(mx, 2) - top * (0.15 + 0.12 * k)
            d.ellipse((dx - 1.5, cy - 1.5, dx + 1.5, cy + 1.5), fill=fg)
        # bottom bar: heart, bubble, plane, bookmark; likes and caption text
        y0, s = top + ih + bottom * 0.1, bottom * 0.22
        lw = max(1, round(s / 10))
        x = max(mx, 2) + s * 0.2
        if rng.random() < 0.4:
            d.polygon(_heart(x, y0, s), fill=(237, 73, 86))
        else:
            d.line(_heart(x, y0, s) + _heart(x, y0, s)[:1], fill=fg, width=lw)
        d.ellipse((x + 1.5 * s, y0, x + 2.5 * s, y0 + s), outline=fg, width=lw)
        d.polygon([(x + 3 * s, y0), (x + 4 * s, y0 + 0.1 * s), (x + 3.4 * s, y0 + s)], outline=fg)
        bx = w - max(mx, 2) - 1.2 * s
        mark = [(0, 0), (0.8, 0), (0.8, 1), (0.4, 0.7), (0, 1), (0, 0)]  # bookmark
        d.line([(bx + s * u, y0 + s * v) for u, v in mark], fill=fg, width=lw)
        px2 = quantize_px(bottom * 0.16)
        likes = f"{int(rng.integers(1, 100000)):,} likes"
        draw_text(d, (x, y0 + 1.35 * s), likes, fg, ui, px2)
        caption = name + " " + random_words(rng, 3).lower()
        draw_text(d, (x, y0 + 2.5 * s), caption, dim, ui, px2)
        out = np.array(canvas)
        out[top : top + ih, mx : mx + iw] = resize_to(img, iw, ih)
        return out


_T = np.linspace(0, 2 * np.pi, 24, endpoint=False)
_HEART = np.stack(  # a heart curve scaled to the unit box, y down
    [
        0.5 + 16 * np.sin(_T) ** 3 / 34,
        0.45 - (13 * np.cos(_T) - 5 * np.cos(2 * _T) - 2 * np.cos(3 * _T) - np.cos(4 * _T)) / 34,
    ],
    axis=1,
)


def _heart(x: float, y: float, s: float) -> list[tuple[float, float]]:
    """The heart polygon in the box (x, y, x + s, y + s)."""
    return [(x + s * u, y + s * v) for u, v in _HEART.tolist()]
