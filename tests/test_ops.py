"""The CPU edit ops (fisc.augment.ops): the contract every op keeps, config validation, and
semantic checks against independent expectations (numpy / PIL)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from fisc.augment.ops import MAX_SIDE, MIN_SIDE, OPS, OpConfigError, build_op, fit_size

NAMES = sorted(OPS)
DETERMINISTIC = {"hflip", "vflip", "grayscale"}  # no randomness at default settings
FAMILIES = {
    "crop", "pad", "resize", "aspect", "rotate", "rotate90", "hflip", "vflip", "perspective",
    "skew", "blur", "sharpen", "noise", "jpeg", "pixelize", "shuffle_pixels", "brightness",
    "contrast", "saturation", "hue", "color_jitter", "grayscale", "opacity", "channel", "text",
    "emoji", "stripes", "meme", "screenshot", "paste_onto", "overlay_image",
}  # fmt: skip


def textured(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs plus fine grain: every edit has something to change."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-20, 21, (h, w, 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


IMG = textured()
OTHER_IMG = textured(50, 70, seed=1)


def other(rng: np.random.Generator) -> np.ndarray:
    return OTHER_IMG


def run(op, img, seed: int) -> np.ndarray:
    return op(img, np.random.default_rng(seed), other)


def check_contract(out: np.ndarray) -> None:
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.ndim == 3 and out.shape[2] == 3
    assert MIN_SIDE <= out.shape[0] <= MAX_SIDE and MIN_SIDE <= out.shape[1] <= MAX_SIDE
    assert out.flags.c_contiguous


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool(np.any(a != b))


def test_registry_has_every_family():
    assert set(OPS) == FAMILIES


@pytest.mark.parametrize("name", NAMES)
def test_contract_and_input_untouched(name):
    img = IMG.copy()
    for level in (None, 0.0, 1.0):
        op = OPS[name]() if level is None else OPS[name].at(level)
        for seed in range(2):
            out = run(op, img, seed)
            check_contract(out)
            assert not np.shares_memory(out, img)
    assert np.array_equal(img, IMG), "the input array was modified"


@pytest.mark.parametrize("name", NAMES)
def test_full_intensity_changes_the_image(name):
    op = OPS[name].at(1.0)
    assert any(differs(run(op, IMG, seed), IMG) for seed in range(4))


@pytest.mark.parametrize("name", NAMES)
def test_seeded(name):
    op = OPS[name]()
    outs = [run(op, IMG, seed) for seed in range(4)]
    assert all(np.array_equal(run(op, IMG, seed), outs[seed]) for seed in range(4))
    if name not in DETERMINISTIC:
        assert any(differs(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(8, 8), (8, 400), (400, 8), (1, 1), (3, 17)])
def test_tiny_and_elongated(name, shape):
    img = textured(*shape, seed=2)
    for op in (OPS[name](), OPS[name].at(1.0)):
        for seed in range(2):
            check_contract(run(op, img, seed))


@pytest.mark.parametrize("name", NAMES)
def test_gray_and_rgba_inputs(name):
    gray = IMG[:, :, 0].copy()
    rgba = np.dstack([IMG, np.full(IMG.shape[:2], 255, np.uint8)])
    for img in (gray, rgba):
        check_contract(run(OPS[name](), img, 0))


@pytest.mark.parametrize("name", NAMES)
def test_p_zero_returns_input(name):
    op = build_op(name, {"p": 0.0})
    assert np.array_equal(run(op, IMG, 0), IMG)


@pytest.mark.parametrize("name", NAMES)
def test_bad_config(name):
    with pytest.raises(OpConfigError, match=rf"{name}.*bogus"):
        build_op(name, {"bogus": 1})
    with pytest.raises(OpConfigError, match=rf"{name}\.p"):
        build_op(name, {"p": 1.5})
    for key, spec in OPS[name].params.items():
        if spec.hi is None or isinstance(spec.default, (bool, str)):
            continue
        bad = spec.hi + 1
        value = (
            [spec.lo if spec.lo is not None else 0, bad] if isinstance(spec.default, tuple) else bad
        )
        with pytest.raises(OpConfigError, match=rf"{name}\.{key}"):
            build_op(name, {key: value})
        if isinstance(spec.default, tuple):
            with pytest.raises(OpConfigError, match=rf"{name}\.{key}"):
                build_op(name, {key: [spec.default[1], spec.default[0] - 1]})  # min > max


def test_unknown_op_names_known_ones():
    with pytest.raises(OpConfigError, match=r"nope.*crop.*rotate90"):
        build_op("nope")


@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].needs_other])
def test_composite_needs_a_provider(name):
    op = OPS[name]()
    with pytest.raises(OpConfigError, match=name):
        op(IMG, np.random.default_rng(0))
    with pytest.raises(OpConfigError, match=name):
        op.apply(IMG, np.random.default_rng(0), None)


def test_composites_are_the_ones_that_need_another_image():
    assert {n for n in NAMES if OPS[n].needs_other} == {"paste_onto", "overlay_image"}


# ----------------------------------------------------------------------------- semantics


def test_flips_and_rot90_match_numpy_and_pil():
    assert np.array_equal(run(build_op("hflip"), IMG, 0), np.fliplr(IMG))
    assert np.array_equal(run(build_op("vflip"), IMG, 0), np.flipud(IMG))
    pil = Image.fromarray(IMG)
    k1 = run(build_op("rotate90", {"k": [1, 1]}), IMG, 0)
    assert np.array_equal(k1, np.rot90(IMG, 1))
    assert np.array_equal(k1, np.asarray(pil.transpose(Image.Transpose.ROTATE_90)))  # CCW
    assert np.array_equal(run(build_op("rotate90", {"k": [2, 2]}), IMG, 0), np.rot90(IMG, 2))
    assert np.array_equal(run(build_op("rotate90", {"k": [3, 3]}), IMG, 0), np.rot90(IMG, -1))


def test_grayscale_is_gray():
    out = run(build_op("grayscale"), IMG, 0)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    luma = IMG.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - luma).max() <= 1.0


@pytest.mark.parametrize("area", [(0.05, 0.1), (0.3, 0.5), (0.8, 1.0)])
def test_crop_area_in_range(area):
    op = build_op("crop", {"area": list(area)})
    for seed in range(20):
        out = run(op, IMG, seed)
        frac = out.shape[0] * out.shape[1] / (IMG.shape[0] * IMG.shape[1])
        assert area[0] - 0.03 <= frac <= area[1] + 0.03, (seed, out.shape, frac)


def test_crop_is_a_window_of_the_input():
    out = run(build_op("crop", {"area": [0.3, 0.3]}), IMG, 3)
    h, w = out.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(IMG, (h, w, 3))[..., 0, :, :, :]
    assert np.any(np.all(windows == out, axis=(-3, -2, -1)))


def test_jpeg_low_quality_loses_more():
    def err(q):
        out = run(build_op("jpeg", {"quality": [q, q]}), IMG, 0)
        return np.abs(out.astype(int) - IMG).mean()

    assert err(5) > 2 * err(95) > 0


def test_pad_keeps_the_image_inside():
    out = run(build_op("pad", {"frac": [0.1, 0.1], "reflect_p": 0.0}), IMG, 0)
    assert out.shape == (64 + 2 * 6, 80 + 2 * 8, 3)
    assert np.array_equal(out[6:70, 8:88], IMG)
    assert len(np.unique(out[:6].reshape(-1, 3), axis=0)) == 1  # one solid colour


def test_rotate_expands_the_canvas():
    out = run(build_op("rotate", {"angle": [45, 45]}), IMG, 0)
    side = (64 + 80) / np.sqrt(2)
    assert abs(out.shape[0] - side) <= 2 and abs(out.shape[1] - side) <= 2


def test_noise_has_the_configured_std():
    flat = np.full((128, 128, 3), 128, np.uint8)
    out = run(build_op("noise", {"std": [10, 10], "gray_p": 0.0}), flat, 0)
    assert 9.0 < (out.astype(float) - 128).std() < 11.0


def test_brightness_scales_values():
    flat = np.full((16, 16, 3), 100, np.uint8)
    means = {
        run(build_op("brightness", {"strength": [0.5, 0.5]}), flat, s).mean() for s in range(8)
    }
    assert {round(m) for m in means} == {150, 67}  # x1.5 or /1.5


def test_identity_colour_edits_are_exact():
    for name, cfg in [
        ("opacity", {"alpha": [1.0, 1.0]}),
        ("brightness", {"strength": [0.0, 0.0]}),
        ("color_jitter", {k: [0.0, 0.0] for k in ("brightness", "contrast", "saturation", "hue")}),
        ("hue", {"shift": [0.0, 0.0]}),
    ]:
        assert np.array_equal(run(build_op(name, cfg), IMG, 0), IMG), name


def test_opacity_blends_towards_a_solid_colour():
    out = run(build_op("opacity", {"alpha": [0.0, 0.0]}), IMG, 0)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1


def test_shuffle_pixels_permutes_pixels():
    out = run(build_op("shuffle_pixels", {"fraction": [0.5, 0.5]}), IMG, 0)
    assert differs(out, IMG)
    key = lambda a: np.sort(a.reshape(-1, 3).view("V3").ravel())  # noqa: E731
    assert np.array_equal(key(out), key(IMG))
    assert 0.3 < np.mean(np.any(out != IMG, axis=2)) <= 0.5


def test_channel_modes():
    assert np.array_equal(
        run(build_op("channel", {"shuffle": 0, "drop": 0, "invert": 1}), IMG, 0), 255 - IMG
    )
    out = run(build_op("channel", {"shuffle": 0, "drop": 1, "invert": 0}), IMG, 0)
    assert sum(bool(np.all(out[..., c] == 0)) for c in range(3)) == 1
    out = run(build_op("channel", {"shuffle": 1, "drop": 0, "invert": 0}), IMG, 0)
    assert sorted(out.reshape(-1, 3).sum(0)) == sorted(IMG.reshape(-1, 3).sum(0))
    with pytest.raises(OpConfigError, match="channel"):
        build_op("channel", {"shuffle": 0, "drop": 0, "invert": 0})


def test_paste_onto_and_overlay_image_at_full_size():
    same = lambda rng: textured(64, 80, seed=5)  # noqa: E731
    cfg = {"size": [1.0, 1.0], "opacity": [1.0, 1.0]}
    rng = np.random.default_rng(0)
    assert np.array_equal(build_op("paste_onto", cfg)(IMG, rng, same), IMG)
    assert np.array_equal(build_op("overlay_image", cfg)(IMG, rng, same), same(rng))


def test_paste_onto_shows_a_scaled_copy_on_the_other_image():
    out = run(build_op("paste_onto", {"size": [0.5, 0.5]}), IMG, 0)
    assert out.shape[0] * out.shape[1] == pytest.approx(64 * 80, rel=0.05)  # input's area
    assert out.shape[1] / out.shape[0] == pytest.approx(70 / 50, rel=0.05)  # other's aspect


def test_meme_and_screenshot_frames():
    out = run(build_op("meme", {"bar": [0.25, 0.25]}), IMG, 0)
    assert out.shape == (80, 80, 3) and np.array_equal(out[16:], IMG)
    out = run(build_op("screenshot", {"scale": [1.0, 1.0]}), IMG, 0)
    assert out.shape[1] == 80 and out.shape[0] > 64
    rows = [y for y in range(out.shape[0] - 63) if np.array_equal(out[y : y + 64], IMG)]
    assert len(rows) == 1  # the image, unscaled, between the bars


def test_text_with_emoji_fonts_and_long_strings():
    for cfg in ({"emoji_p": 1.0}, {"length": [150, 200], "stroke_p": 1.0}):
        op = build_op("text", cfg)
        assert any(differs(run(op, IMG, s), IMG) for s in range(3))


def test_fit_size_bounds():
    assert fit_size(IMG) is IMG
    for shape, expect in [((1, 1), (8, 8)), ((4, 4000), (8, 2048)), ((3000, 1500), (2048, 1024))]:
        assert fit_size(np.zeros((*shape, 3), np.uint8)).shape[:2] == expect


def test_resize_to_box_filters_integer_factors_then_bilinear():
    """resize_to: the same array at its own size; a shrink by k >= 2 whole times averages k x k
    blocks (rows and columns past the last whole block dropped), then bilinear to the exact
    size; shrinks under 2x and enlargements are bilinear."""
    from fisc.augment.ops.geometric import resize_to

    img = np.random.default_rng(3).integers(0, 256, (45, 63, 3), np.uint8)

    def blocks(a: np.ndarray, k: int) -> np.ndarray:
        h, w = a.shape[0] // k, a.shape[1] // k
        return a[: h * k, : w * k].reshape(h, k, w, k, 3).mean(axis=(1, 3))

    assert resize_to(img, 63, 45) is img
    out = resize_to(img, 15, 11)  # k = 4: 44 x 60 of the source, exactly 11 x 15 blocks
    assert out.shape == (11, 15, 3) and out.dtype == np.uint8
    assert np.abs(out - blocks(img, 4)).max() <= 0.5 + 1e-9  # rounded block means
    out = resize_to(img, 31, 22)  # k = 2: exactly 22 x 31 blocks
    assert np.abs(out - blocks(img, 2)).max() <= 0.5 + 1e-9
    out = resize_to(img, 20, 14)  # k = 3 (63 // 20, 45 // 14): 15 x 21 blocks, then bilinear
    box = np.rint(blocks(img, 3)).astype(np.uint8)
    linear = cv2.resize(box, (20, 14), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - linear).max() <= 1
    for w, h in ((40, 30), (100, 70)):  # under 2x, and larger: bilinear
        expected = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize_to(img, w, h), expected), (w, h)


def test_an_ops_uniform_draw_is_numpys_uniform():
    """``Op.uniform`` gives ``rng.uniform(a, b)``'s number from the same generator state, for
    float, int and negative ranges, and ``a`` without a draw for a point range."""
    op = build_op("blur", {"sigma": [0.5, 4.0]})
    for lo, hi in ((0.5, 4.0), (-3, 7), (1e-3, 1e-3 + 1e-9), (2.0, 2.0)):
        op.values["sigma"] = (lo, hi)
        for seed in range(20):
            mine, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            want = float(theirs.uniform(lo, hi)) if hi > lo else float(lo)
            assert op.uniform(mine, "sigma") == want
            assert mine.random() == (
                theirs.random() if hi > lo else np.random.default_rng(seed).random()
            )
