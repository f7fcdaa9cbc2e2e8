"""Text lines composed from cached glyph masks, pixel for pixel as Pillow draws them.

Pillow's FreeType text (``ImageDraw.text``, ``FreeTypeFont.getmask2``) loads, hints and
renders every glyph of a string twice per call (once to measure, once to draw), 10-15 us a
glyph here: most of the ``meme`` and ``screenshot`` edits' cost, whose short Latin strings
reuse a few dozen glyphs per font and size. Here a glyph seen a third time is drawn alone by
Pillow once, kept as its 8-bit ink with its position relative to the pen and its advance, and
a line of kept glyphs is composed the way Pillow's ``font_render`` composes one with its basic
layout:

- glyph ``i`` sits at the pen position rounded to whole pixels (``(x + 32) >> 6`` in 1/64 px)
  after the advances of glyphs ``0..i-1`` plus the kerning Pillow adds to each pair's first
  advance (looked up once per pair, only for fonts with a ``kern`` table);
- the pen starts at the anchor (``"la"``, ``"lm"``, ``"ls"``: left edge at the ascender, the
  middle or the baseline) plus the drawing position's fraction, in 1/64 px, computed in single
  precision and rounded as C rounds, as Pillow computes it;
- overlapping ink combines as Pillow's does: ``a + b * (255 - a) / 255``, with its rounding.

:func:`line_ink` returns ``None`` for a line with a glyph seen fewer than ``ADMIT`` times, and
the caller has Pillow draw it: drawing a glyph alone costs as much as ~10 uses of it save, and
the ``text`` edit's random characters from fonts of thousands of glyphs mostly never repeat
(that edit leaves every line to Pillow). ``tests/test_glyphs.py`` checks composed lines against
Pillow's over the shipped fonts (whole character sets, whole and fractional positions, the
three anchors).
"""

from __future__ import annotations

import functools
import math
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fisc.augment import overlay_assets as assets

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
ANCHORS = ("la", "lm", "ls")
# per process (a DataLoader worker), oldest dropped first; full, the three take ~30 MB
MAX_GLYPHS = 20_000  # kept glyphs (at 6-40 px, 0.2-2 KB each)
MAX_SIGHTINGS = 50_000  # glyphs seen but not kept yet (~200 B each)
MAX_PAIRS = 50_000  # kerning values (~200 B each)
# a glyph is drawn alone and kept at its ADMIT-th sighting: drawing it costs ~90 us once, a
# line composed from kept glyphs saves ~10 us a glyph against Pillow's pass
ADMIT = 3


def pixel(v: int) -> int:
    """A coordinate in 1/64 px rounded to whole pixels, as Pillow's ``PIXEL`` rounds."""
    return (v + 32) >> 6


def c_round(v: float) -> int:
    """C's ``round``: halves away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


@functools.lru_cache(maxsize=512)  # a face costs ~150 KB; loading one ~0.1 ms
def font(path: Path | None, size: int) -> _Font:
    """``path`` at ``size`` px with PIL's basic layout (no script shaping: ~40% faster than
    Raqm, and shaping does not matter for random character strings); PIL's default font when
    ``path`` is None or unreadable."""
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
        except OSError:
            pass
    return assets.load_font(None, size)


@functools.lru_cache(maxsize=1024)
def has_kerning_table(path: Path | None) -> bool:
    """Whether the font file lists a ``kern`` table (FreeType kerns pairs only then); a file
    that cannot be read counts as having one (its pairs are looked up)."""
    if path is None:
        return True
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack(">H", f.read(12)[4:6])
            records = f.read(16 * n)
    except (OSError, struct.error):
        return True
    return any(records[16 * i : 16 * i + 4] == b"kern" for i in range(n))


class Glyph:
    """A glyph's ink (``None``: it has none), the ink's top-left relative to the pen on the
    baseline, and the glyph's advance in 1/64 px."""

    __slots__ = ("advance", "ink", "x", "y")

    def __init__(self, ink: np.ndarray | None, x: int, y: int, advance: int):
        self.ink, self.x, self.y, self.advance = ink, x, y, advance


def render_glyph(fnt: _Font, ch: str) -> Glyph:
    """``ch`` drawn alone by Pillow at a whole-pixel baseline point, cropped to its ink."""
    advance = round(fnt.getlength(ch) * 64)
    x0, y0, x1, y1 = (int(v) for v in fnt.getbbox(ch, anchor="ls"))
    canvas = Image.new("L", (max(1, x1 - x0) + 2, max(1, y1 - y0) + 2), 0)
    ox, oy = 1 - x0, 1 - y0  # the baseline point, with a 1 px margin all round
    ImageDraw.Draw(canvas).text((ox, oy), ch, fill=255, font=fnt, anchor="ls")
    m = np.asarray(canvas)
    x, y, w, h = cv2.boundingRect(m)
    if not (w and h):
        return Glyph(None, 0, 0, advance)
    return Glyph(m[y : y + h, x : x + w].copy(), x - ox, y - oy, advance)


class _Bounded(dict):
    """A dict that drops its oldest entries beyond ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        if len(self) >= self.limit:
            for old in list(self)[: max(1, self.limit // 10)]:
                del self[old]
        self[key] = value


_glyphs = _Bounded(MAX_GLYPHS)  # (path, size, char) -> Glyph
_seen = _Bounded(MAX_SIGHTINGS)  # sightings of the glyphs not kept yet
_pairs = _Bounded(MAX_PAIRS)  # (path, size, two chars) -> kerning, 1/64 px


def clear_caches() -> None:
    """Forget every kept glyph, sighting and kerning value (tests; nothing else needs it)."""
    _glyphs.clear()
    _seen.clear()
    _pairs.clear()


def glyph(path: Path | None, size: int, ch: str) -> Glyph:
    """The kept glyph, drawn alone by Pillow on first use."""
    key = (path, size, ch)
    g = _glyphs.get(key)
    if g is None:
        g = render_glyph(font(path, size), ch)
        _glyphs.put(key, g)
    return g


def kerning(path: Path | None, size: int, pair: str) -> int:
    """What Pillow adds to the first glyph's advance before the second (1/64 px): the pair's
    length less the two glyphs' advances."""
    key = (path, size, pair)
    k = _pairs.get(key)
    if k is None:
        length = round(font(path, size).getlength(pair) * 64)
        k = length - glyph(path, size, pair[0]).advance - glyph(path, size, pair[1]).advance
        _pairs.put(key, k)
    return k


@functools.lru_cache(maxsize=4096)
def baseline_below(path: Path | None, size: int, anchor: str) -> int:
    """Pixels from a left anchor point down to the baseline (``"la"``: from the ascender,
    ``"lm"``: from the middle of ascender and descender, ``"ls"``: 0)."""
    fnt = font(path, size)
    return int(fnt.getbbox("x", anchor=anchor)[1]) - int(fnt.getbbox("x", anchor="ls")[1])


def ready(text: str, path: Path | None, size: int) -> bool:
    """Whether every glyph of ``text`` is kept or is seen for at least the ``ADMIT``-th time
    (then it is drawn alone and kept now); the other glyphs' sightings are counted, and the
    line is left to Pillow."""
    ok = True
    for ch in set(text):
        key = (path, size, ch)
        if key in _glyphs:
            continue
        seen = _seen.get(key, 0) + 1
        if seen < ADMIT:
            _seen.put(key, seen)
            ok = False
    return ok


def line_ink(
    text: str,
    path: Path | None,
    size: int,
    xy: tuple[float, float] = (0.0, 0.0),
    anchor: str = "la",
) -> tuple[np.ndarray | None, int, int] | None:
    """The ink of ``ImageDraw.text(xy, text, font=font(path, size), anchor=anchor)`` on a
    canvas large enough for all of it, and the ink's top-left pixel there (``(None, 0, 0)`` for
    a line without ink); ``None`` when a glyph is not kept yet and seen too rarely (see
    :func:`ready`): let Pillow draw that line. Raises what Pillow raises for a glyph it cannot
    draw."""
    if anchor not in ANCHORS:
        raise ValueError(f"anchor {anchor!r}: one of {ANCHORS}")
    if not ready(text, path, size):
        return None
    kern = has_kerning_table(path)
    inks, pens, xs, ys = [], [], [], []
    pen, prev = 0, ""
    for ch in text:
        if kern and prev:
            pen += kerning(path, size, prev + ch)
        g = glyph(path, size, ch)
        if g.ink is not None:
            inks.append(g.ink)
            pens.append(pen)
            xs.append(g.x)
            ys.append(g.y)
        pen += g.advance
        prev = ch
    if not inks:
        return None, 0, 0
    x, y = xy
    fx, fy = math.modf(x)[0], math.modf(y)[0]  # Pillow places the mask at int(x), int(y)
    # the pen's start as Pillow sets it: the text's left / top extent plus the fraction
    left = max(0, -min(pixel(p) + gx for p, gx in zip(pens, xs, strict=True)))
    top = max(0, -min(ys))
    f32 = np.float32
    start_x = c_round(float((f32(left) + f32(fx)) * f32(64))) - 64 * left
    start_y = c_round(float((f32(-top) - f32(fy)) * f32(64))) + 64 * top
    cols = [pixel(start_x + p) + gx for p, gx in zip(pens, xs, strict=True)]
    x0, y0 = min(cols), min(ys)
    x1 = max(c + m.shape[1] for c, m in zip(cols, inks, strict=True))
    y1 = max(r + m.shape[0] for r, m in zip(ys, inks, strict=True))
    out = np.zeros((y1 - y0, x1 - x0), np.uint8)
    right = x0  # right edge of the ink so far: a glyph left of it may overlap earlier ink
    for m, c, r in zip(inks, cols, ys, strict=True):
        h, w = m.shape
        region = out[r - y0 : r - y0 + h, c - x0 : c - x0 + w]
        if c >= right:
            region[...] = m
        else:  # Pillow's "over": src + dst * (255 - src) / 255, rounded as it rounds
            t = region.astype(np.uint32) * (255 - m.astype(np.uint32)) + 128
            np.minimum(m + ((t >> 8) + t >> 8), 255, out=t)
            region[...] = t
        right = max(right, c + w)
    base_y = int(y) + baseline_below(path, size, anchor) - pixel(start_y)
    return out, int(x) + x0, base_y + y0


def text_length(text: str, path: Path | None, size: int) -> float:
    """``font(path, size).getlength(text)``: the advance width in px (1/64 precision), from
    kept glyphs when :func:`ready` says so, else from Pillow."""
    if not ready(text, path, size):
        return font(path, size).getlength(text)
    kern = has_kerning_table(path)
    pen, prev = 0, ""
    for ch in text:
        if kern and prev:
            pen += kerning(path, size, prev + ch)
        pen += glyph(path, size, ch).advance
        prev = ch
    return pen / 64
