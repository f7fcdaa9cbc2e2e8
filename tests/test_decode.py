"""Odd but valid images decode to RGB; bad files raise errors that name them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fisc.data.decode import ImageDecodeError, load_rgb


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    cases = {
        "gray.png": rgb.convert("L"),
        "palette.png": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "rgba.png": rgb.convert("RGBA"),
        "la.png": rgb.convert("LA"),
    }
    for name, img in cases.items():
        path = _save(img, tmp_path / name)
        out = load_rgb(path)
        assert out.mode == "RGB" and out.size == (30, 20), name
        if name in ("gray.png", "palette.png", "cmyk.jpg"):  # no alpha: PIL's own conversion
            expected = np.asarray(Image.open(path).convert("RGB"))
            np.testing.assert_array_equal(np.asarray(out), expected, err_msg=name)


def test_rgba_transparent_pixels_composite_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = np.asarray(load_rgb(_save(img, tmp_path / "clear.png")))
    assert (out == 255).all()


def test_16bit_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = np.asarray(load_rgb(_save(Image.fromarray(arr), tmp_path / "deep.png")))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = load_rgb(_save(img, tmp_path / "rot.jpg", exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "missing"])
def test_bad_files_name_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.jpg"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(path)
    assert str(path) in str(err.value)


def test_decompression_bomb_refused(tmp_path):
    path = _save(Image.new("L", (3000, 3000)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        load_rgb(path, max_pixels=1_000_000)
    assert load_rgb(path, max_pixels=10_000_000).size == (3000, 3000)


def test_jpeg_decodes_at_reduced_scale_down_to_min_side(tmp_path):
    """A 640x480 JPEG with min_side=100 decodes at 1/4 scale (160x120: 1/8 would be 60 px
    high), close to the full decode resized; min_side=None or a PNG decodes in full."""
    from PIL import Image

    from fisc.data.decode import load_rgb

    y, x = np.mgrid[0:480, 0:640]
    pixels = np.stack([x % 256, y % 256, (x // 3 + y // 5) % 256], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "a.jpg").size == (640, 480)
    small = load_rgb(tmp_path / "a.jpg", min_side=100)
    assert small.size == (160, 120)
    assert load_rgb(tmp_path / "a.jpg", min_side=240).size == (320, 240)
    assert load_rgb(tmp_path / "a.jpg", min_side=241).size == (640, 480)
    assert load_rgb(tmp_path / "a.png", min_side=100).size == (640, 480)
    full = np.asarray(load_rgb(tmp_path / "a.jpg").resize((160, 120), Image.BOX), np.float32)
    assert np.abs(np.asarray(small, np.float32) - full).mean() < 12
