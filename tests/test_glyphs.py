"""``fisc.augment.glyphs``: lines composed from kept glyphs are the pixels Pillow draws."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fisc.augment import glyphs
from fisc.augment import overlay_assets as assets
from fisc.augment.ops import build_op
from fisc.augment.ops import overlay as overlay_ops

FONTS = assets.font_paths()
pytestmark = pytest.mark.skipif(not FONTS, reason="AugLy's fonts are not installed")


@pytest.fixture(autouse=True)
def fresh_caches():
    glyphs.clear_caches()
    yield
    glyphs.clear_caches()


def pillow(text, path, size, xy, anchor, canvas):
    """What ``ImageDraw.text`` draws: the reference."""
    im = Image.new("L", canvas, 0)
    ImageDraw.Draw(im).text(xy, text, fill=255, font=glyphs.font(path, size), anchor=anchor)
    return np.asarray(im)


def composed(text, path, size, xy, anchor, canvas):
    """The line from kept glyphs, pasted on the same canvas (it must fit)."""
    for _ in range(glyphs.ADMIT):  # None until every glyph is seen often enough
        drawn = glyphs.line_ink(text, path, size, xy, anchor)
        if drawn is not None:
            break
    ink, x, y = drawn
    out = np.zeros(canvas[::-1], np.uint8)
    if ink is not None:
        assert x >= 0 and y >= 0 and x + ink.shape[1] <= canvas[0] and y + ink.shape[0] <= canvas[1]
        out[y : y + ink.shape[0], x : x + ink.shape[1]] = ink
    return out


def random_line(rng, path):
    allc, asc, _ = overlay_ops._chars(path)
    pool = asc if asc and rng.random() < 0.5 else allc
    text = "".join(pool[int(i)] for i in rng.integers(0, len(pool), int(rng.integers(1, 16))))
    return text[: len(text) // 2] + " " + text[len(text) // 2 :] if rng.random() < 0.3 else text


def test_composed_lines_are_pillows_pixels_across_fonts_sizes_positions_and_anchors():
    """Every 4th shipped font (and PIL's default), random lines from its whole character set,
    6-47 px, whole and fractional positions, each left anchor: the same array as Pillow's."""
    rng = np.random.default_rng(0)
    fractions = 0
    for path in [*FONTS[::4], None]:
        for _ in range(2):
            text, size = random_line(rng, path), int(rng.integers(6, 48))
            xy = (3 * size + rng.random() * (rng.random() < 0.6), 3 * size + rng.random())
            fractions += xy[0] != int(xy[0])
            anchor = glyphs.ANCHORS[int(rng.integers(3))]
            canvas = (len(text) * 3 * size + 6 * size, 7 * size)
            want = pillow(text, path, size, xy, anchor, canvas)
            got = composed(text, path, size, xy, anchor, canvas)
            assert np.array_equal(got, want), (path, text, size, xy, anchor)
    assert fractions > 20


def test_kerned_and_overlapping_glyphs_compose_as_pillow_does():
    """A font with a kern table whose pairs move glyphs (the pen positions differ from the
    plain advances), and a script face whose letters overlap (Pillow's "over" blending),
    at pen fractions on both sides of half a pixel."""
    impact = next(p for p in FONTS if p.name == "Impact.ttf")
    assert glyphs.has_kerning_table(impact)
    assert glyphs.kerning(impact, 40, "AV") != 0 or glyphs.kerning(impact, 40, "To") != 0
    script = next(p for p in FONTS if p.name == "Pacifico.ttf")
    for path, text in ((impact, "AVAToWAY"), (script, "mmffllnn")):
        for fraction in (0.0, 0.49, 0.51, 0.99):
            xy = (50 + fraction, 40 + fraction)
            want = pillow(text, path, 40, xy, "la", (600, 200))
            got = composed(text, path, 40, xy, "la", (600, 200))
            assert np.array_equal(got, want), (path.name, fraction)
            glyphs.clear_caches()
    # the script face's glyph boxes do overlap: the blending branch ran
    g = [glyphs.glyph(script, 40, ch) for ch in "mm"]
    assert g[0].x + g[0].ink.shape[1] > g[0].advance // 64 + g[1].x


def test_text_length_is_pillows_getlength():
    impact = next(p for p in FONTS if p.name == "Impact.ttf")
    for path in (impact, FONTS[0]):
        for text in ("AVATAR To WAVE", "hello world"):
            lengths = [glyphs.text_length(text, path, 32) for _ in range(glyphs.ADMIT)]
            assert glyphs._glyphs  # the last from kept glyphs, the others from Pillow
            assert lengths == [glyphs.font(path, 32).getlength(text)] * glyphs.ADMIT


def test_a_glyph_is_left_to_pillow_until_its_third_sighting_then_kept():
    path = FONTS[0]
    assert glyphs.ADMIT == 3
    assert glyphs.line_ink("ab", path, 12) is None
    assert glyphs.line_ink("ba", path, 12) is None  # seen twice
    assert not glyphs._glyphs  # nothing drawn alone yet
    assert glyphs.line_ink("bab", path, 12) is not None  # third sighting: composed
    assert {k[2] for k in glyphs._glyphs} == {"a", "b"}
    assert glyphs.line_ink("abc", path, 12) is None  # "c" is new
    assert glyphs.line_ink("ab", path, 12) is not None  # kept glyphs need no more sightings
    assert glyphs.line_ink("ab", path, 13) is None  # another size, other glyphs
    for _ in range(glyphs.ADMIT - 1):
        assert glyphs.line_ink("  ", path, 12) is None
    assert glyphs.line_ink("  ", path, 12) == (None, 0, 0)
    with pytest.raises(ValueError, match="anchor"):
        glyphs.line_ink("ab", path, 12, anchor="mm")
    with pytest.raises(ValueError, match=r"^one line at a time \(ImageDraw\.text splits lines"):
        glyphs.line_ink("a\nb", path, 12)


def test_bounded_caches_drop_their_oldest_entries_by_weight():
    full = glyphs._Bounded(100)
    for i in range(100):
        full.put(i, i)
    assert len(full) == 100  # up to the limit itself nothing is dropped
    full.put(100, 100)  # over it: the oldest tenth goes, then the new entry comes in
    assert list(full) == list(range(10, 101)) and full.weight == 91
    d = glyphs._Bounded(10)
    for i in range(25):
        d.put(i, i)
    assert len(d) <= 10 and 24 in d and 0 not in d
    assert list(d) == sorted(d)  # oldest first, the newest kept
    n = len(d)
    d.put(24, -1)  # a new value for a key it holds: nothing else dropped
    assert len(d) == n and d[24] == -1 and d.weight == n
    heavy = glyphs._Bounded(100, weigh=len)
    for k in "abcdefg":
        heavy.put(k, "x" * 30)  # 30 each: at most three fit
        assert heavy.weight == sum(map(len, heavy.values())) <= 100
    assert list(heavy) == ["e", "f", "g"]
    heavy.drop("f")
    heavy.clear()
    assert heavy.weight == 0 and not heavy
    # a kept glyph's sightings are forgotten
    for _ in range(glyphs.ADMIT):
        glyphs.line_ink("z", FONTS[0], 12)
    key = (FONTS[0], 12, "z")
    assert key in glyphs._glyphs and key not in glyphs._seen
    assert glyphs._glyphs.weight == 200 + glyphs._glyphs[key].ink.nbytes
    for _ in range(glyphs.ADMIT):
        glyphs.line_ink(" ", FONTS[0], 12)
    assert glyphs._glyphs[(FONTS[0], 12, " ")].ink is None  # no ink: its ~200 B alone
    assert glyphs._glyphs.weight == 400 + glyphs._glyphs[key].ink.nbytes


@pytest.mark.parametrize("name", ["meme", "screenshot"])
def test_meme_and_screenshot_make_the_same_images_as_with_pillow_alone(name, monkeypatch):
    """The ops with kept glyphs, warmed so most lines are composed, against the same ops with
    every line drawn by Pillow (the code before glyphs were kept)."""
    op = build_op(name, {"p": 1.0})
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((96, 96), (160, 120))]
    seeds = range(300)

    def outputs():
        return [op.edit(images[s % 2], np.random.default_rng(s)) for s in seeds]

    for _ in range(glyphs.ADMIT - 1):
        outputs()  # every glyph seen often enough
    kept = outputs()
    assert len(glyphs._glyphs) > 100
    monkeypatch.setattr(glyphs, "ready", lambda *a: False)
    alone = outputs()
    assert all(np.array_equal(a, b) for a, b in zip(kept, alone, strict=True))


def test_pen_start_fractions_at_the_rounding_edges():
    """The pen's start is rounded as Pillow rounds it: C's ``round`` (a y fraction of 32.5/64
    goes to 33/64, one pixel lower than Python's ``round`` would put it) of a single-precision
    sum (with a glyph reaching 8 px left of the pen, an x fraction just under 31.5/64 is
    absorbed into 31.5/64 and rounds up to the next pixel)."""
    brush = next(p for p in FONTS if p.name == "AlexBrush-Regular.ttf")
    assert glyphs.glyph(brush, 30, "j").x < -4
    x_edge = float(np.float32(31.5 / 64 - 2**-25))
    for text, xy in (("ab", (50.0, 40 + 32.5 / 64)), ("jab", (50 + x_edge, 40.0))):
        want = pillow(text, brush, 30, xy, "la", (300, 150))
        assert np.array_equal(composed(text, brush, 30, xy, "la", (300, 150)), want), text
    # the sum's size comes from FreeType's boxes, which can reach past the ink: Allura's "a"
    # at 11 px has a blank top row (box 4 px above the baseline, ink 3), its "q" a blank
    # left column (box 1 px left of the pen, ink 0): 4 and 1, not 3 and 0, decide the rounding
    allura = next(p for p in FONTS if p.name == "Allura-Regular.ttf")
    a, q = glyphs.glyph(allura, 11, "a"), glyphs.glyph(allura, 11, "q")
    assert (a.box_y, a.y, q.box_x, q.x) == (-4, -3, -1, 0)
    cases = (("a", (40.0, 40 + 32.5 / 64 - 2**-22)), ("q", (40 + 31.5 / 64 - 2**-25, 40.0)))
    for text, xy in cases:
        want = pillow(text, allura, 11, xy, "la", (100, 80))
        assert np.array_equal(composed(text, allura, 11, xy, "la", (100, 80)), want), text


def test_pen_start_fractions_at_the_rounding_edges_when_no_box_reaches_past_the_pen():
    """With no box left of the pen (OpenSans's "n" at 30 px: box at 0) or above the baseline
    ("_": box from the baseline down), the single-precision sum holds the fraction alone, so
    nothing is absorbed: an x fraction just under 31.5/64 rounds down, a y fraction just under
    32.5/64 to 32/64 (a sum with a whole pixel in it would round both the other way)."""
    sans = next(p for p in FONTS if p.name == "OpenSans-Regular.ttf")
    n, bar = glyphs.glyph(sans, 30, "n"), glyphs.glyph(sans, 30, "_")
    assert n.box_x == 0 and bar.box_y == 0 and bar.box_x < 0
    x_edge = float(np.float32(31.5 / 64 - 2**-25))
    y_edge = float(np.float32(32.5 / 64 - 2**-24))
    for text, xy in (
        ("n", (40 + x_edge, 40.0)),
        ("nn", (40 + x_edge, 40.0)),
        ("_", (40.0, 40 + y_edge)),
    ):
        want = pillow(text, sans, 30, xy, "la", (120, 100))
        assert np.array_equal(composed(text, sans, 30, xy, "la", (120, 100)), want), text


def test_c_round_rounds_halves_away_from_zero():
    """C's ``round``, which Pillow's pen arithmetic uses (Python's rounds halves to even)."""
    cases = {0.0: 0, 0.4: 0, 0.5: 1, 0.6: 1, 1.5: 2, 2.5: 3, -0.4: 0, -0.5: -1, -0.6: -1, -2.5: -3}
    assert {v: glyphs.c_round(v) for v in cases} == cases


def test_kept_glyphs_and_kerning_are_drawn_and_looked_up_once(monkeypatch):
    """A kept glyph is drawn alone once and a kerning pair measured once, however often lines
    use them; fonts without a ``kern`` table look no pair up; sightings count per font."""
    kerned = next(p for p in FONTS if glyphs.has_kerning_table(p))
    plain = next(p for p in FONTS if not glyphs.has_kerning_table(p) and p != kerned)
    drawn, measured = [], []
    render, font = glyphs.render_glyph, glyphs.font

    class Counting:
        def __init__(self, fnt):
            self.fnt = fnt

        def getlength(self, text, *a, **k):
            measured.append(text)
            return self.fnt.getlength(text, *a, **k)

        def __getattr__(self, name):
            return getattr(self.fnt, name)

    monkeypatch.setattr(glyphs, "render_glyph", lambda f, ch: drawn.append(ch) or render(f, ch))
    monkeypatch.setattr(glyphs, "font", lambda path, size: Counting(font(path, size)))
    for _ in range(glyphs.ADMIT + 4):
        glyphs.line_ink("AVA", kerned, 20)
    assert sorted(drawn) == ["A", "V"]
    assert sorted(m for m in measured if len(m) == 2) == ["AV", "VA"]
    for pair in ("AV", "VA"):  # what Pillow adds between the two
        gap = round(font(kerned, 20).getlength(pair) * 64)
        gap -= sum(glyphs.glyph(kerned, 20, ch).advance for ch in pair)
        assert glyphs._pairs[(kerned, 20, pair)] == gap
    assert all(key[0] == kerned for key in glyphs._pairs)
    for _ in range(glyphs.ADMIT):
        glyphs.line_ink("AVA", plain, 20)
    assert all(key[0] == kerned for key in glyphs._pairs)  # nothing looked up for `plain`
    other = next(p for p in FONTS if p not in (kerned, plain))
    assert glyphs.line_ink("AV", other, 20) is None  # seen in other fonts only: not yet


def test_text_length_counts_sightings_and_keeps_glyphs_as_lines_do():
    path = FONTS[0]
    want = glyphs.font(path, 32).getlength("ab")
    assert glyphs.text_length("ab", path, 32) == want
    assert (path, 32, "a") in glyphs._seen and not glyphs._glyphs  # counted, not kept
    for _ in range(glyphs.ADMIT - 1):
        assert glyphs.text_length("ab", path, 32) == want
    assert set(glyphs._glyphs) == {(path, 32, "a"), (path, 32, "b")}


def test_text_masks_from_kept_glyphs_are_the_masks_pillow_draws():
    """``text_mask`` (lines on a canvas of 2 em a character and 2.5 em, ink beyond it cut,
    cropped to the ink, stacked) from kept glyphs against the same with Pillow drawing every
    line, over every 3rd font; some lines reach beyond that canvas (script faces' swashes)."""
    rng = np.random.default_rng(2)
    by_name = {p.name: p for p in FONTS}
    cases = [  # ink above the canvas's top, left of its left edge
        (by_name["WCSoldOutABta.ttf"], "B", 10),
        (by_name["NotoSansJavanese-Regular.ttf"], "\ua9bf", 10),
    ]
    for path in FONTS[::3]:
        allc, asc, _ = overlay_ops._chars(path)
        for _ in range(2):
            pool = asc if asc and rng.random() < 0.7 else allc
            text = "".join(pool[int(i)] for i in rng.integers(0, len(pool), 12))
            text = text[:5] + "\n" + text[5:] if rng.random() < 0.3 else text
            cases.append((path, text, int(rng.integers(6, 40))))
    cut = {"top": 0, "left": 0, "right or bottom": 0}
    for path, text, px in cases:
        want = overlay_ops.text_mask(text, path, px, kept=False)
        for _ in range(glyphs.ADMIT):  # the last from kept glyphs
            got = overlay_ops.text_mask(text, path, px)
        assert np.array_equal(got, want), (path.name, text, px)
        for line in text.split("\n"):
            ink, x, y = glyphs.line_ink(line, path, px, (px, px // 2))
            if ink is not None:
                w, h = len(line) * 2 * px + 2 * px, int(2.5 * px) + 2
                cut["top"] += y < 0
                cut["left"] += x < 0
                cut["right or bottom"] += x + ink.shape[1] > w or y + ink.shape[0] > h
    assert all(cut.values()), cut


def test_a_line_whose_ink_lies_wholly_off_the_canvas_leaves_no_mask(monkeypatch):
    """As Pillow's canvas would show nothing of it: the empty mask text_mask gives for a line
    without ink ("ab" at 10 px: a 60 x 27 px canvas; one row or column past its bottom or
    right edge must not wrap round as a negative slice end would)."""
    ink = np.full((4, 5), 200, np.uint8)
    for x, y in ((-40, -40), (3, 28), (61, 3)):  # above and left; just below; just right
        monkeypatch.setattr(overlay_ops, "line_ink", lambda *a, x=x, y=y, **k: (ink, x, y))
        assert np.array_equal(overlay_ops.text_mask("ab", FONTS[0], 10), np.zeros((1, 1)))
    monkeypatch.setattr(overlay_ops, "line_ink", lambda *a, **k: (ink, 3, -2))  # 2 rows cut
    assert np.array_equal(overlay_ops.text_mask("ab", FONTS[0], 10), ink[2:])


def test_lines_beyond_the_composed_cases_are_left_to_pillow():
    """Negative positions (Pillow cuts ink its mask leaves above the pen), several lines and
    anchors other than la / lm / ls: ``line_ink`` declines or refuses them, and ``draw_text``
    draws them as ``ImageDraw.text`` does."""
    sans = next(p for p in FONTS if p.name == "OpenSans-Regular.ttf")
    for _ in range(glyphs.ADMIT):
        glyphs.line_ink("ace bd", sans, 30)  # every glyph kept
    assert glyphs.line_ink("ace", sans, 30, (10, -2.7)) is None
    with pytest.raises(ValueError, match="one line"):
        glyphs.line_ink("ac\nbd", sans, 30)
    for text, xy, anchor in (
        ("ace", (10, -2.7), "la"),
        ("ace", (-3.4, 20), "ls"),
        ("ac\nbd", (10, 5), "la"),
        ("ace", (60, 40), "mm"),
        ("ace", (10.3, 40.6), "lm"),
    ):
        want, got = Image.new("RGB", (160, 120), (9, 9, 9)), Image.new("RGB", (160, 120), (9, 9, 9))
        ImageDraw.Draw(want).text(
            xy, text, fill=(200, 30, 60), font=glyphs.font(sans, 30), anchor=anchor
        )
        overlay_ops.draw_text(ImageDraw.Draw(got), xy, text, (200, 30, 60), sans, 30, anchor)
        assert np.array_equal(np.asarray(got), np.asarray(want)), (text, xy, anchor)
        assert np.asarray(want).max() == 200  # the text is on the canvas


def test_a_new_glyph_among_kept_ones_is_counted_and_leaves_the_line_to_pillow():
    """Every glyph of a line that is not kept has its sighting counted, however many of the
    line's other glyphs are kept (the glyphs are looked at in no set order)."""
    path = FONTS[0]
    kept = "abcdefghijklmnopqrst"
    for _ in range(glyphs.ADMIT):
        glyphs.line_ink(kept, path, 12)
    assert {k[2] for k in glyphs._glyphs} == set(kept)
    assert glyphs.line_ink(kept + "xyz", path, 12) is None
    for ch in "xyz":  # three: a set order with all three before every kept one is 1 in 1,771
        assert glyphs._seen[(path, 12, ch)] == 1
        assert (path, 12, ch) not in glyphs._glyphs
