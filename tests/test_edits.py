"""Tests of fisc.augment.edits: PIL edits driven only by the numpy generator passed in."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from PIL import Image

from fisc.augment import edits as E
from fisc.augment import overlay_assets as A

STOCHASTIC = sorted(set(E.EDITS) - {"hflip", "vflip"})


def noise_image(w: int = 96, h: int = 64, seed: int = 123) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def background(w: int = 120, h: int = 90) -> Image.Image:
    return Image.new("RGB", (w, h), (10, 200, 30))


def apply(name: str, img: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if name == "paste_onto":
        return E.EDITS[name](img, rng, background())
    return E.EDITS[name](img, rng)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.tobytes() == b.tobytes()


def test_registry_names():
    assert set(E.EDITS) == {
        "crop",
        "resize",
        "rotate",
        "hflip",
        "vflip",
        "color",
        "blur",
        "jpeg",
        "text_overlay",
        "emoji_overlay",
        "paste_onto",
    }


@pytest.mark.parametrize("name", sorted(E.EDITS))
def test_edit_rgb_bounded_deterministic_and_changes(name):
    img = noise_image()
    before = img.tobytes()
    outs = [apply(name, img, s) for s in range(6)]
    assert img.tobytes() == before  # input untouched
    for out in outs:
        assert out.mode == "RGB"
        assert all(E.MIN_SIDE <= s <= E.MAX_SIDE for s in out.size)
        assert out is not img
    assert same(apply(name, img, 3), outs[3])  # same seed, same result
    assert any(not same(out, img) for out in outs)  # changes the image for some seed
    if name in STOCHASTIC:
        assert any(not same(outs[0], out) for out in outs[1:])  # seeds matter


@pytest.mark.parametrize("name", sorted(E.EDITS))
def test_edit_uses_no_global_randomness(name):
    np.random.seed(7)
    random.seed(7)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    apply(name, noise_image(), 0)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state


@pytest.mark.parametrize("size", [(8, 8), (300, 12), (12, 300), (2000, 40), (1500, 1500)])
@pytest.mark.parametrize("name", sorted(E.EDITS))
def test_odd_sizes_stay_in_bounds(name, size):
    for seed in range(3):
        out = apply(name, noise_image(*size), seed)
        assert out.mode == "RGB"
        assert all(E.MIN_SIDE <= s <= E.MAX_SIDE for s in out.size), (name, size, out.size)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
@pytest.mark.parametrize("name", sorted(E.EDITS))
def test_other_modes(name, mode):
    img = noise_image().convert(mode)
    assert apply(name, img.convert("RGB"), 1).mode == "RGB"  # converted by the caller
    assert apply(name, img, 1).mode == "RGB"  # or not: the edit converts


def test_crop_keeps_30_to_90_percent():
    img = noise_image(400, 200)
    for seed in range(20):
        w, h = apply("crop", img, seed).size
        assert 120 <= w <= 360 and 60 <= h <= 180


def test_resize_scale_range():
    img = noise_image(200, 200)
    areas = [np.prod(apply("resize", img, s).size) / 200**2 for s in range(30)]
    assert min(areas) >= 0.3**2 * 0.95 and max(areas) <= 1.5**2 * 1.05
    assert max(areas) / min(areas) > 2


def test_rotate_right_angles_or_expanded():
    img = noise_image(100, 60)
    sizes = {apply("rotate", img, s).size for s in range(30)}
    for w, h in sizes:
        assert (w, h) in {(100, 60), (60, 100)} or (w > 100 and h > 60)
    assert len(sizes) > 2


def test_flips_are_exact():
    img = noise_image()
    a = np.asarray(img)
    assert np.array_equal(np.asarray(apply("hflip", img, 0)), a[:, ::-1])
    assert np.array_equal(np.asarray(apply("vflip", img, 0)), a[::-1])


def test_blur_smooths_and_jpeg_is_lossy():
    img = noise_image(128, 128)
    a = np.asarray(img, dtype=float)
    b = np.asarray(apply("blur", img, 0), dtype=float)
    assert np.abs(np.diff(b, axis=1)).mean() < 0.5 * np.abs(np.diff(a, axis=1)).mean()
    j = np.asarray(apply("jpeg", img, 0), dtype=float)
    assert j.shape == a.shape and np.abs(j - a).mean() > 5


def test_emoji_overlay_is_local():
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    for seed in range(10):
        diff = np.asarray(apply("emoji_overlay", img, seed)).any(axis=2)
        ys, xs = np.nonzero(diff)
        assert len(xs) > 0
        assert xs.max() - xs.min() < 0.5 * 100 + 2 and ys.max() - ys.min() < 0.5 * 100 + 2


def test_text_overlay_changes_part_of_image():
    img = Image.new("RGB", (200, 200), (255, 255, 255))
    changed = [
        (np.asarray(apply("text_overlay", img, s)) != 255).any(axis=2).mean() for s in range(20)
    ]
    assert max(changed) > 0.005 and min(changed) < 0.9


def test_paste_onto_keeps_background_size_and_scales_image():
    img, bg = Image.new("RGB", (100, 100), (250, 0, 0)), background(200, 160)
    bg_bytes = bg.tobytes()
    for seed in range(10):
        out = E.paste_onto(img, np.random.default_rng(seed), bg)
        assert out.size == bg.size
        red = (np.asarray(out)[..., 0] > 200).sum()
        side = np.sqrt(red)  # the pasted square: 30-70% of the 160 px side
        assert 0.3 * 160 - 2 <= side <= 0.7 * 160 + 2
    assert bg.tobytes() == bg_bytes
    with pytest.raises(ValueError):
        E.paste_onto(img, np.random.default_rng(0), None)


def test_random_edit_chain():
    img = noise_image()
    calls = []

    def provider(rng):
        calls.append(rng)
        return background()

    for seed in range(15):
        out, names = E.random_edit_chain(img, np.random.default_rng(seed), 3)
        assert len(names) == 3 == len(set(names)) and "paste_onto" not in names
        assert out.mode == "RGB" and all(E.MIN_SIDE <= s <= E.MAX_SIDE for s in out.size)
        again, names2 = E.random_edit_chain(img, np.random.default_rng(seed), 3)
        assert names2 == names and same(again, out)
    all_names = E.random_edit_chain(img, np.random.default_rng(0), len(E.EDITS), provider)[1]
    assert sorted(all_names) == sorted(E.EDITS) and len(calls) == 1
    orders = {tuple(E.random_edit_chain(img, np.random.default_rng(s), 2)[1]) for s in range(20)}
    assert len(orders) > 5
    _, names = E.random_edit_chain(
        img, np.random.default_rng(1), 9, exclude={"blur", "jpeg"}, background_provider=provider
    )
    assert "blur" not in names and "jpeg" not in names
    out, names = E.random_edit_chain(img, np.random.default_rng(1), 0)
    assert names == [] and same(out, img) and out is not img
    with pytest.raises(ValueError):
        E.random_edit_chain(img, np.random.default_rng(0), len(E.EDITS))  # no provider
    with pytest.raises(ValueError):
        E.random_edit_chain(img, np.random.default_rng(0), 1, exclude={"nope"})


def test_augly_assets_found_and_sorted():
    pytest.importorskip("augly")
    fonts, emojis = A.font_paths(), A.emoji_paths()
    assert len(fonts) > 50 and len(emojis) > 100
    assert list(fonts) == sorted(fonts)
    assert all(p.suffix == ".ttf" for p in fonts) and all(p.suffix == ".png" for p in emojis)
    noto_arabic = [p for p in fonts if p.stem == "NotoSansArabic-Regular"]
    if noto_arabic:
        assert any(0x0600 <= ord(c) <= 0x06FF for c in A.font_charset(noto_arabic[0]))


@pytest.fixture
def no_assets(monkeypatch, tmp_path):
    monkeypatch.setenv(A.ENV_ASSETS_DIR, str(tmp_path / "missing"))
    for fn in (A.augly_assets_dir, A.font_paths, A.emoji_paths):
        fn.cache_clear()
    yield
    monkeypatch.delenv(A.ENV_ASSETS_DIR)
    for fn in (A.augly_assets_dir, A.font_paths, A.emoji_paths):
        fn.cache_clear()


def test_fallback_without_assets(no_assets, caplog):
    img = Image.new("RGB", (120, 120), (255, 255, 255))
    with caplog.at_level(logging.WARNING, logger=A.__name__):
        outs = {
            name: [apply(name, img, s) for s in range(5)]
            for name in ("text_overlay", "emoji_overlay")
        }
    assert A.font_paths() == () and A.emoji_paths() == ()
    assert any("fonts not found" in r.message for r in caplog.records)
    assert any("emoji images not found" in r.message for r in caplog.records)
    for name, images in outs.items():
        assert any(not same(o, img) for o in images), name
        assert same(images[2], apply(name, img, 2))
