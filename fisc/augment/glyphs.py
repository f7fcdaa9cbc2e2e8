"""Text lines composed from cached glyph masks, pixel for pixel as Pillow draws them.

Pillow's FreeType text (``ImageDraw.text``, ``FreeTypeFont.getmask2``) loads and hints every
glyph of a string four times per call (laying the line out, measuring it, and twice while
drawing it) and renders it twice, 10-15 us a glyph here: most of the ``meme`` and
``screenshot`` edits' cost, whose short Latin strings reuse a few dozen glyphs per font and
size. Here a glyph seen a third time is drawn alone by
Pillow once, kept as its 8-bit ink with its position relative to the pen and its advance, and
a line of kept glyphs is composed the way Pillow's ``font_render`` composes one with its basic
layout:

- glyph ``i`` sits at the pen position rounded to whole pixels (``(x + 32) >> 6`` in 1/64 px)
  after the advances of glyphs ``0..i-1`` plus the kerning Pillow adds to each pair's first
  advance (looked up once per pair, only for fonts with a ``kern`` table);
- the pen starts at the anchor (``"la"``, ``"lm"``, ``"ls"``: left edge at the ascender, the
  middle or the baseline) plus the drawing position's fraction, in 1/64 px, computed as Pillow
  computes it: in single precision from how far the glyphs' FreeType boxes reach left of the
  pen and above the baseline, and rounded as C rounds;
- overlapping ink combines as Pillow's does: ``a + b * (255 - a) / 255``, with its rounding.

:func:`line_ink` returns ``None`` for a line with a glyph seen fewer than ``ADMIT`` times, and
the caller has Pillow draw it: drawing a glyph alone costs as much as ~10 uses of it save, and
the ``text`` edit's random characters from fonts of thousands of glyphs mostly never repeat
(that edit leaves every line to Pillow). Lines at a negative position (Pillow cuts what its
own mask leaves out there) are left to Pillow too. ``tests/test_glyphs.py`` checks composed
lines against Pillow's over the shipped fonts (whole character sets, whole and fractional
positions, the three anchors).
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
# per process (a DataLoader worker), oldest dropped first; full, the three take ~50 MB
MAX_GLYPH_BYTES = 32 * 2**20  # kept glyphs, their ink and ~200 B each (6-40 px: 0.2-2 KB)
MAX_SIGHTINGS = 50_000  # glyphs seen but not kept (~200 B each)
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
    baseline, its advance in 1/64 px, and how far FreeType's box of it reaches left of the pen
    and above the baseline (``box_x``, ``box_y``: at most 0; the box may hold blank edges
    beyond the ink, and Pillow places a line's pen from the boxes)."""

    __slots__ = ("advance", "box_x", "box_y", "ink", "x", "y")

    def __init__(self, ink, x: int, y: int, advance: int, box_x: int, box_y: int):
        self.ink, self.x, self.y, self.advance = ink, x, y, advance
        self.box_x, self.box_y = box_x, box_y


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
        return Glyph(None, 0, 0, advance, x0, y0)
    return Glyph(m[y : y + h, x : x + w].copy(), x - ox, y - oy, advance, x0, y0)


class _Bounded(dict):
    """A dict whose entries weigh at most ``limit`` in all (``weigh(value)``, 1 each by
    default); a new entry that would go beyond it first drops the oldest tenth of the weight.
    Entries are added with :meth:`put` and removed with :meth:`drop`."""

    def __init__(self, limit: int, weigh=None):
        super().__init__()
        self.limit, self.weigh, self.weight = limit, weigh or (lambda _: 1), 0

    def put(self, key, value) -> None:
        self.drop(key)
        w = self.weigh(value)
        if self.weight + w > self.limit:
            goal = min(self.limit - w, 0.9 * self.limit)
            for old in list(self):
                if self.weight <= goal:
                    break
                self.drop(old)
        self[key] = value
        self.weight += w

    def drop(self, key) -> None:
        if key in self:
            self.weight -= self.weigh(self.pop(key))

    def clear(self) -> None:
        super().clear()
        self.weight = 0


def _glyph_bytes(g: Glyph) -> int:
    return 200 + (g.ink.nbytes if g.ink is not None else 0)  # ~200 B: the object and its key


_glyphs = _Bounded(MAX_GLYPH_BYTES, _glyph_bytes)  # (path, size, char) -> Glyph
_seen = _Bounded(MAX_SIGHTINGS)  # (path, size, char) -> sightings, of glyphs not kept
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
        _seen.drop(key)
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
    (:func:`glyph` draws it alone and keeps it when the line is composed); otherwise the
    sightings of the glyphs not kept are counted, and the line is left to Pillow."""
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
    if "\n" in text:
        raise ValueError("one line at a time (ImageDraw.text splits lines at newlines)")
    if xy[0] < 0 or xy[1] < 0:  # Pillow cuts what its mask leaves above / left of the pen
        return None
    if not ready(text, path, size):
        return None
    placed, _ = layout(text, path, size)
    # how far the glyphs' boxes reach left of the pen's start and above it
    left = max([0, *(-(pixel(pen) + g.box_x) for g, pen in placed)])
    top = max([0, *(-g.box_y for g, _ in placed)])
    placed = [(g, pen) for g, pen in placed if g.ink is not None]
    if not placed:
        return None, 0, 0
    inks = [g.ink for g, _ in placed]
    ys = [g.y for g, _ in placed]
    x, y = xy
    fx, fy = math.modf(x)[0], math.modf(y)[0]  # Pillow places the mask at int(x), int(y)
    # the pen's start as Pillow sets it: the boxes' left / top extent plus the fraction
    f32 = np.float32
    start_x = c_round(float((f32(left) + f32(fx)) * f32(64))) - 64 * left
    start_y = c_round(float((f32(-top) - f32(fy)) * f32(64))) + 64 * top
    cols = [pixel(start_x + pen) + g.x for g, pen in placed]
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


def layout(text: str, path: Path | None, size: int) -> tuple[list[tuple[Glyph, int]], int]:
    """Each glyph of ``text`` (kept, drawn alone now if not yet) with its pen position, and the
    pen's end, in 1/64 px from the start: the advances plus the kerning of each pair (fonts
    with a ``kern`` table only), as Pillow's basic layout adds them."""
    kern = has_kerning_table(path)
    placed, pen, prev = [], 0, ""
    for ch in text:
        if kern and prev:
            pen += kerning(path, size, prev + ch)
        g = glyph(path, size, ch)
        placed.append((g, pen))
        pen += g.advance
        prev = ch
    return placed, pen


def text_length(text: str, path: Path | None, size: int) -> float:
    """``font(path, size).getlength(text)``: the advance width in px (1/64 precision), from
    kept glyphs when :func:`ready` says so, else from Pillow."""
    if not ready(text, path, size):
        return font(path, size).getlength(text)
    return layout(text, path, size)[1] / 64
