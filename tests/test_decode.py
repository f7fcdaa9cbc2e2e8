"""Odd but valid images decode to RGB; bad files raise errors that name them."""

from __future__ import annotations

import io
import zlib

import cv2
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


# 16-bit values and their 8-bit values, v / 257 rounded half up (65535 / 255 = 257): 33025 ->
# 128.5 -> 129, where dividing by 65536 would give 128; 51400 -> 200.0, where x 256 would give 201
SIXTEEN_BIT = ([0, 256, 33025, 51400, 65535], [0, 1, 129, 200, 255])


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_16bit_modes_scale_by_the_full_range(mode):
    """Every 16-bit layout Pillow hands over maps v to v / 257 rounded half up."""
    from fisc.data.decode import _to_8bit_rgb

    layout = {"I;16": "<u2", "I;16L": "<u2", "I;16N": "=u2", "I;16B": ">u2"}[mode]
    # the second image is dark: it stays dark (scaled by the format's range, not its maximum)
    for values, expected in SIXTEEN_BIT, ([0, 257, 514], [0, 1, 2]):
        assert expected == [int(v / 257 + 0.5) for v in values]
        img = Image.frombytes(mode, (len(values), 1), np.array(values, layout).tobytes())
        out = np.asarray(_to_8bit_rgb(img))
        assert out.shape == (1, len(values), 3), mode
        assert (out == np.array(expected)[None, :, None]).all(), (mode, out[0, :, 0].tolist())


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGBa", "PA"])
def test_every_alpha_mode_is_composited_on_white(mode):
    """Colour c at opacity a becomes c * a / 255 + 255 * (1 - a / 255) (to within rounding), in
    every mode with an alpha band, premultiplied ones included."""
    from fisc.data.decode import _to_8bit_rgb

    alpha = np.array([0, 64, 128, 200, 255], np.uint8)
    rgba = np.zeros((1, 5, 4), np.uint8)
    rgba[0, :, :3], rgba[0, :, 3] = (90, 90, 90), alpha  # grey: the same in L, LA and P modes
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    out = np.asarray(_to_8bit_rgb(img)).astype(np.float64)
    a = alpha / 255.0
    want = 90 * a + 255 * (1 - a)
    assert out.shape == (1, 5, 3) and np.abs(out - want[None, :, None]).max() <= 1.5, out[0, :, 0]


def test_a_palette_image_s_transparent_colour_becomes_white(tmp_path):
    pixels = np.array([[0, 1, 2, 1]], np.uint8)
    img = Image.fromarray(pixels, "P")
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * 759)
    path = _save(img, tmp_path / "clear.png", transparency=0)
    assert "transparency" in Image.open(path).info
    out = np.asarray(load_rgb(path))
    assert out[0].tolist() == [[255, 255, 255], [200, 0, 0], [0, 0, 250], [200, 0, 0]]


W = [255, 255, 255]


@pytest.mark.parametrize(
    "mode, pixels, key, expected",
    [
        ("RGB", [[[10, 20, 30], [1, 2, 3], [10, 20, 30]]], (10, 20, 30), [W, [1, 2, 3], W]),
        ("L", [[10, 40, 10]], 10, [W, [40] * 3, W]),
        ("1", [[0, 1, 0]], 0, [W, W, W]),  # black keyed: black and white both become white
        # a 16-bit key is a 16-bit value: 2570 (10 in 8 bits) is not keyed; 10280 is 40
        ("I;16", [[10, 10280, 2570]], 10, [W, [40] * 3, [10] * 3]),
    ],
)
def test_a_colour_keyed_transparent_colour_becomes_white_at_every_depth(
    tmp_path, mode, pixels, key, expected
):
    """A PNG's tRNS colour key makes that colour transparent: white, as for palette images."""
    dtype = {"1": bool, "I;16": np.uint16}.get(mode, np.uint8)
    img = Image.fromarray(np.array(pixels, dtype))
    assert img.mode == mode
    path = _save(img, tmp_path / "keyed.png", transparency=key)
    assert Image.open(path).mode == mode and Image.open(path).info["transparency"] == key
    out = np.asarray(load_rgb(path))
    assert out[0].tolist() == expected


def _png(
    width: int,
    height: int,
    depth: int,
    colour_type: int,
    rows: list[bytes],
    trns: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
):
    """A PNG written by hand (Pillow writes neither 2/4-bit grayscale nor 16-bit RGB with a
    colour key): signature, IHDR, tRNS, the ``extra`` chunks, one IDAT of filter-0 rows,
    IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = (
        width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([depth, colour_type, 0, 0, 0])
    )
    idat = zlib.compress(b"".join(b"\0" + row for row in rows))
    chunks = [(b"IHDR", ihdr), (b"tRNS", trns), *extra, (b"IDAT", idat), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, data) for kind, data in chunks)


@pytest.mark.parametrize("depth", [2, 4])
def test_a_2_and_4_bit_grayscale_colour_key_is_white_whichever_level(tmp_path, depth):
    """Every level of a 2- or 4-bit grayscale PNG, each keyed in turn: the keyed level becomes
    white, the others read v x 255 / (2^depth - 1) (Pillow scales the pixels, not the key)."""
    levels = list(range(2**depth))
    packed = int("".join(format(v, f"0{depth}b") for v in levels), 2)
    row = packed.to_bytes(len(levels) * depth // 8, "big")
    for key in levels:
        path = tmp_path / f"gray{depth}_{key}.png"
        path.write_bytes(_png(len(levels), 1, depth, 0, [row], key.to_bytes(2, "big")))
        assert Image.open(path).mode == "L" and Image.open(path).info["transparency"] == key
        want = [255 if v == key else v * 255 // (2**depth - 1) for v in levels]
        out = np.asarray(load_rgb(path))
        assert out[0].tolist() == [[v] * 3 for v in want], (depth, key)


@pytest.mark.parametrize("depth, key, keyed", [(2, 4, 0), (2, 0x0101, 1), (4, 0x1F, 15)])
def test_a_grayscale_key_s_bits_above_the_depth_are_ignored(tmp_path, depth, key, keyed):
    """An encoder may leave bits above the depth in a key (the PNG spec says to use the low
    ones, as libpng does): only the level of the key's low bits is keyed."""
    levels = list(range(2**depth))
    packed = int("".join(format(v, f"0{depth}b") for v in levels), 2)
    row = packed.to_bytes(len(levels) * depth // 8, "big")
    path = tmp_path / "gray_high_bits.png"
    path.write_bytes(_png(len(levels), 1, depth, 0, [row], key.to_bytes(2, "big")))
    want = [255 if v == keyed else v * 255 // (2**depth - 1) for v in levels]
    assert np.asarray(load_rgb(path))[0, :, 0].tolist() == want


def test_a_16_bit_rgb_colour_key_makes_only_the_exact_colour_white(tmp_path):
    """16-bit RGB with a tRNS key: only pixels equal to the key in all 16 bits of all three
    samples become white; the others keep their high bytes, among them the pixels whose high
    bytes equal the key's (one differs in a low byte only) and the one whose 16-bit values
    equal the key's 8-bit reading."""
    key = (2570, 5140, 7710)  # high bytes 10, 20, 30
    pixels = [(10, 20, 30), (2560, 5120, 7680), key, (2570, 5140, 7711), (2571, 5140, 7710)]
    row = np.array(pixels, ">u2").tobytes()
    trns = b"".join(v.to_bytes(2, "big") for v in key)
    path = tmp_path / "deep_keyed.png"
    path.write_bytes(_png(len(pixels), 2, 16, 2, [row, row], trns))
    assert Image.open(path).info["transparency"] == key
    want = [[v >> 8 for v in p] if p != key else W for p in pixels]
    out = np.asarray(load_rgb(path))
    assert out.shape == (2, len(pixels), 3)
    assert out[0].tolist() == want and out[1].tolist() == want


def _keyed_16_bit_rgb(height: int, width: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """16-bit samples with a key that some pixels equal and others miss by a low byte."""
    key = (2570, 5140, 7710)
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (height, width, 3)).astype(np.uint16)
    deep[rng.random((height, width)) < 0.4] = key
    deep[0, 0] = (2571, 5140, 7710)
    return deep, key


def test_a_16_bit_colour_key_is_applied_before_the_exif_rotation(tmp_path):
    """The key marks pixels as stored; the EXIF orientation (6: turn 90 degrees clockwise to
    display) then moves them with the picture, on a picture that is not square."""
    deep, key = _keyed_16_bit_rgb(5, 7)
    exif = Image.Exif()
    exif[0x0112] = 6
    tiff = exif.tobytes()
    tiff = tiff[6:] if tiff.startswith(b"Exif\0\0") else tiff
    rows = [deep[r].astype(">u2").tobytes() for r in range(5)]
    trns = b"".join(v.to_bytes(2, "big") for v in key)
    path = tmp_path / "deep_keyed_rotated.png"
    path.write_bytes(_png(7, 5, 16, 2, rows, trns, extra=((b"eXIf", tiff),)))
    assert Image.open(path).getexif()[0x0112] == 6
    stored = (deep >> 8).astype(np.uint8)
    stored[(deep == key).all(axis=2)] = 255
    want = np.rot90(stored, k=-1)  # clockwise
    out = np.asarray(load_rgb(path))
    assert out.shape == (7, 5, 3) and (out == want).all()


def test_a_16_bit_colour_keyed_png_without_its_end_chunk_decodes_as_the_whole_file(tmp_path):
    """What Pillow reads (a file cut after its image data, IEND missing) the colour-key fix
    reads too: the same pixels as the complete file."""
    deep, key = _keyed_16_bit_rgb(3, 4)
    rows = [deep[r].astype(">u2").tobytes() for r in range(3)]
    trns = b"".join(v.to_bytes(2, "big") for v in key)
    whole = _png(4, 3, 16, 2, rows, trns)
    assert whole.endswith(b"IEND\xaeB`\x82")
    (tmp_path / "whole.png").write_bytes(whole)
    (tmp_path / "cut.png").write_bytes(whole[:-12])
    want = np.asarray(load_rgb(tmp_path / "whole.png"))
    assert (want[(deep == key).all(axis=2)] == 255).all()
    assert (np.asarray(load_rgb(tmp_path / "cut.png")) == want).all()


def test_only_a_png_s_raw_layout_is_read(tmp_path):
    """The raw layout that decides the colour-key fixes is a PNG's only (a JPEG's tile holds a
    tuple, a TIFF's its own layout names)."""
    from fisc.data.decode import _png_rawmode

    gray = Image.fromarray(np.zeros((2, 3), np.uint8))
    assert _png_rawmode(Image.open(_save(gray, tmp_path / "g.png"))) == "L"
    assert _png_rawmode(Image.open(_save(gray, tmp_path / "g.jpg"))) is None
    assert _png_rawmode(Image.open(_save(gray, tmp_path / "g.tiff"))) is None


def test_big_endian_16bit_tiff_decodes_like_the_little_endian_one(tmp_path):
    values, expected = SIXTEEN_BIT
    big = _save(Image.fromarray(np.array([values], ">u2")), tmp_path / "big.tiff")
    assert Image.open(big).mode == "I;16B"
    out = np.asarray(load_rgb(big))
    assert out[0, :, 1].tolist() == expected


@pytest.mark.parametrize(
    "mode,values,expected",
    [
        ("I", [0, 500, 1000], [0, 128, 255]),  # by the image's maximum: 500 / 1000 -> 127.5 -> 128
        ("I", [0, 1, 1], [0, 255, 255]),  # a 0/1 mask: white where 1
        ("I", [0, 0, 0], [0, 0, 0]),  # all zero: no division by zero
        ("F", [-1.0, 0.0, 0.25, 1.0], [0, 0, 64, 255]),  # negatives clip to black, not wrap
        ("F", [0.0, 0.5, 0.5], [0, 128, 128]),  # a maximum below 1 is not stretched to white
        # 0.0058823526 / 3 x 255 + 0.5 is 0.99999997: 0, which single precision rounds to 1
        ("F", [0.0058823526, 3.0], [0, 255]),
    ],
)
def test_32bit_and_float_images_scale_by_their_maximum(tmp_path, mode, values, expected):
    dtype = np.int32 if mode == "I" else np.float32
    path = _save(Image.fromarray(np.array([values], dtype)), tmp_path / "deep.tiff")
    assert Image.open(path).mode == mode
    out = np.asarray(load_rgb(path))
    assert out.shape == (1, len(values), 3)
    assert (out == np.array(expected)[None, :, None]).all(), out[0, :, 0].tolist()


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
    reason = {
        "zero": "zero-byte file",
        "text": "not an image file (unidentified format)",
        "truncated": "OSError: ",  # Pillow's wording varies by where the data ends
        "missing": "cannot read file (No such file or directory)",
    }[kind]
    assert err.value.path == str(path) and err.value.reason.startswith(reason), err.value.reason
    assert str(err.value) == f"cannot decode image {path}: {err.value.reason}"


def test_the_one_argument_form_is_the_message_torch_re_raises():
    """A DataLoader worker's error comes back as ``type(e)(str(e))``: the same text."""
    first = ImageDecodeError("a/b.jpg", "truncated")
    again = type(first)(str(first))
    assert str(again) == str(first) == "cannot decode image a/b.jpg: truncated"
    assert again.reason is None and first.reason == "truncated" and first.path == "a/b.jpg"


def test_decompression_bomb_refused(tmp_path):
    path = _save(Image.new("L", (3000, 3000)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        load_rgb(path, max_pixels=1_000_000)
    assert load_rgb(path, max_pixels=10_000_000).size == (3000, 3000)
    assert load_rgb(path, max_pixels=9_000_000).size == (3000, 3000)  # exactly at the limit


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg"])
def test_pillow_s_own_pixel_limit_refuses_too(tmp_path, monkeypatch, name):
    """Past Pillow's limit (``Image.MAX_IMAGE_PIXELS``) it warns, past twice it raises: both
    refuse the file, by either path, whatever ``max_pixels`` allows; at the limit it decodes."""
    import fisc.data.decode as decode

    path = _save(Image.new("RGB", (97, 61), (9, 8, 7)), tmp_path / name)
    for limit, reason in (
        (97 * 61 - 1, "decompression bomb: "),
        (97 * 30, "DecompressionBombError: "),
    ):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        for load in (decode.load_rgb, decode.load_rgb_array):
            with pytest.raises(ImageDecodeError) as err:
                load(path, max_pixels=64_000_000)
            assert err.value.path == str(path) and err.value.reason.startswith(reason), err.value
            assert "exceeds limit of" in err.value.reason
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 97 * 61)
    assert decode.load_rgb(path, max_pixels=64_000_000).size == (97, 61)
    assert decode.load_rgb_array(path, max_pixels=64_000_000).shape == (61, 97, 3)


@pytest.mark.parametrize("size", [(1, 7), (7, 1), (1, 1)])
def test_one_pixel_wide_or_high_images_decode(tmp_path, size):
    pixels = np.arange(3 * size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0], 3)
    for name in ("thin.png", "thin.jpg"):
        path = _save(Image.fromarray(pixels), tmp_path / name)
        out = np.asarray(load_rgb(path))
        assert out.shape == (size[1], size[0], 3), name
        if name.endswith(".png"):
            np.testing.assert_array_equal(out, pixels)


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


def _jpeg_cases(tmp_path) -> dict[str, tuple]:
    """name -> (path, decoded by OpenCV?): the RGB JPEGs load_rgb_array hands to OpenCV, and
    files it must leave to Pillow's path."""
    y, x = np.mgrid[0:333, 0:517]
    pixels = np.stack([x % 256, y % 256, (x // 3 + y // 5) % 256], -1).astype(np.uint8)
    pixels[100:200, 150:300] = np.random.default_rng(1).integers(0, 255, (100, 150, 3))
    rgb = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = Image.Exif()
    upright[0x0112] = 1
    cases = {
        "q95_444.jpg": (dict(quality=95, subsampling=0), True),
        "q75_422.jpg": (dict(quality=75, subsampling=1), True),
        "q50_420.jpg": (dict(quality=50, subsampling=2), True),
        "progressive.jpg": (dict(quality=85, progressive=True), True),
        "upright_exif.jpg": (dict(exif=upright.tobytes()), True),
        "rotated_exif.jpg": (dict(exif=exif.tobytes()), False),
        "png.png": ({}, False),
    }
    out = {name: (_save(rgb, tmp_path / name, **kw), fast) for name, (kw, fast) in cases.items()}
    out["gray.jpg"] = (_save(rgb.convert("L"), tmp_path / "gray.jpg"), False)
    out["cmyk.jpg"] = (_save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg"), False)
    return out


@pytest.mark.parametrize("opencv_rgb", [True, False], ids=["rgb-decode", "bgr-decode"])
@pytest.mark.parametrize("min_side", [None, 40, 80, 100, 166, 167])
def test_load_rgb_array_equals_load_rgb(tmp_path, monkeypatch, min_side, opencv_rgb):
    """Pixel for pixel the array of Pillow's path, at every decode scale (333 px short side:
    1/8 at 40, 1/4 at 80, 1/2 at 100 and 166, full at 167), with OpenCV decoding exactly the
    RGB JPEGs without an EXIF rotation and Pillow the rest; both with OpenCV writing RGB
    itself and, as OpenCV before 4.11 must, BGR swapped afterwards."""
    import fisc.data.decode as decode

    if not opencv_rgb:
        monkeypatch.setattr(decode, "_IMREAD_RGB", None)
    elif decode._IMREAD_RGB is None:
        pytest.skip("this OpenCV has no IMREAD_COLOR_RGB")

    calls = {"imdecode": 0, "pillow": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    for name, (path, fast) in _jpeg_cases(tmp_path).items():
        expected = np.asarray(decode._load_rgb_pillow(path, min_side=min_side))
        calls.update(imdecode=0, pillow=0)
        with monkeypatch.context() as m:
            m.setattr(decode.cv2, "imdecode", counting("imdecode", decode.cv2.imdecode))
            m.setattr(decode, "_load_rgb_pillow", counting("pillow", decode._load_rgb_pillow))
            got = decode.load_rgb_array(path, min_side=min_side)
        assert got.dtype == np.uint8 and got.flags.c_contiguous, name
        assert not got.flags.writeable, name  # the two views start from the same pixels
        np.testing.assert_array_equal(got, expected, err_msg=name)
        assert calls == {"imdecode": int(fast), "pillow": int(not fast)}, name


def test_plain_jpegs_are_planned_from_their_markers_without_pillow(tmp_path, monkeypatch):
    """The commonest JPEGs (three YCbCr components, no EXIF, no Adobe marker) are sized from
    their markers; EXIF, grayscale and CMYK files are not, and Pillow reads their headers."""
    import fisc.data.decode as decode

    opened = []
    real_open = decode.Image.open
    monkeypatch.setattr(
        decode.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    plain = {"q95_444.jpg", "q75_422.jpg", "q50_420.jpg", "progressive.jpg"}
    for name, (path, fast) in _jpeg_cases(tmp_path).items():
        data = path.read_bytes()
        assert decode._plain_jpeg_size(data) == ((517, 333) if name in plain else None), name
        opened.clear()
        plan = decode._opencv_plan(data, 10**8, None)
        assert (plan is not None) == fast and bool(opened) == (name not in plain), name


def test_load_rgb_array_scales_like_load_rgb(tmp_path):
    """A 640x480 JPEG: 1/4 scale at min_side=100, 1/2 at 240, full at 241."""
    from fisc.data.decode import load_rgb_array

    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "a.jpg", quality=90)
    assert load_rgb_array(path, min_side=100).shape == (120, 160, 3)
    assert load_rgb_array(path, min_side=240).shape == (240, 320, 3)
    assert load_rgb_array(path, min_side=241).shape == (480, 640, 3)
    assert load_rgb_array(path).shape == (480, 640, 3)


@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "missing", "bomb"])
def test_load_rgb_array_bad_files_name_the_file(tmp_path, kind):
    from fisc.data.decode import load_rgb_array

    path = tmp_path / f"bad_{kind}.jpg"
    buf = io.BytesIO()  # noise: the headers are a small part of the file
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG"
    )
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated":
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])  # headers intact
    elif kind == "bomb":
        path.write_bytes(buf.getvalue())
    with pytest.raises(ImageDecodeError) as err:
        load_rgb_array(path, max_pixels=4095 if kind == "bomb" else 64_000_000)
    assert str(path) in str(err.value)
    if kind == "bomb":
        assert "4096 pixels exceeds max_pixels=4095" in str(err.value)


def test_load_rgb_array_falls_back_when_opencv_disagrees(tmp_path, monkeypatch):
    """An OpenCV result of another shape than Pillow's header promises is not trusted: the
    file goes through Pillow's path."""
    import fisc.data.decode as decode

    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "a.jpg")
    monkeypatch.setattr(decode.cv2, "imdecode", lambda *a: np.zeros((47, 64, 3), np.uint8))
    expected = np.asarray(decode._load_rgb_pillow(path))
    np.testing.assert_array_equal(decode.load_rgb_array(path), expected)


def test_evaluation_inputs_are_those_of_pillow(tmp_path):
    """EvalImageDataset (validation, extraction, export) gives, for every kind of file, the
    tensor its preprocessing makes of Pillow's picture, bit for bit."""
    import torch

    from fisc.data.datasets import EvalImageDataset
    from fisc.data.decode import _load_rgb_pillow
    from fisc.data.disc21 import list_images
    from fisc.data.preprocess import Preprocess

    cases = _jpeg_cases(tmp_path)
    prep = Preprocess(96, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = list_images(tmp_path)
    assert len(images) == len(cases)
    ds = EvalImageDataset(images, prep)
    for i, path in enumerate(images.paths):
        x, index, ok = ds[i]
        assert (index, ok) == (i, True)
        assert torch.equal(x, prep(_load_rgb_pillow(path))), path.name


def _segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment: 0xFF, the marker, the length (itself included), the payload."""
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _pillow_only_plan(decode, data, max_pixels, min_side):
    """``_opencv_plan`` with every header read by Pillow (the marker reader disabled)."""
    saved = decode._plain_jpeg_size
    decode._plain_jpeg_size = lambda data: None
    try:
        return decode._opencv_plan(data, max_pixels, min_side)
    finally:
        decode._plain_jpeg_size = saved


def _outcome(decode):
    try:
        return decode()
    except ImageDecodeError as e:
        return f"ImageDecodeError: {e}"


def test_marker_reader_plans_as_pillow_does(tmp_path, monkeypatch):
    """The JPEG marker reader takes exactly the plain YCbCr JPEGs without EXIF or Adobe
    blocks (comments, ICC profiles and restart markers included), and plans each as Pillow's
    header parse does at every decode scale and pixel limit; the rest go to Pillow."""
    import fisc.data.decode as decode

    cases = {name: p.read_bytes() for name, (p, _) in _jpeg_cases(tmp_path).items()}
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 255, (61, 97, 3), np.uint8))
    for name, kw in {
        "comment.jpg": dict(comment=b"hello"),
        "icc.jpg": dict(icc_profile=b"\0" * 300),
        "restarts.jpg": dict(restart_marker_blocks=1),
        "optimized.jpg": dict(optimize=True, quality=30),
    }.items():
        cases[name] = _save(rgb, tmp_path / name, **kw).read_bytes()
    plain = cases["comment.jpg"]
    sof = plain.index(b"\xff\xc0")
    cases["fill_bytes.jpg"] = plain[:sof] + b"\xff\xff" + plain[sof:]
    cases["fill_byte.jpg"] = plain[:sof] + b"\xff" + plain[sof:]  # an odd number of them
    # an Adobe marker (transform 1: YCbCr) after the start of image
    adobe = _segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")
    cases["adobe.jpg"] = plain[:2] + adobe + plain[2:]
    # other APP1 (XMP) and APP14 segments are neither EXIF nor Adobe blocks
    xmp = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>")
    cases["xmp.jpg"] = plain[:2] + xmp + plain[2:]
    cases["app14.jpg"] = plain[:2] + _segment(0xEE, b"Other123") + plain[2:]
    # EXIF (a rotation) and Adobe blocks far into the header, after a 2 KB comment: segments
    # shorter than their offset
    comment = _segment(0xFE, b"x" * 2000)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _save(rgb, tmp_path / "rotated.jpg", exif=exif.tobytes()).read_bytes()
    app1 = rotated.index(b"\xff\xe1")
    exif_segment = rotated[app1 : app1 + 2 + int.from_bytes(rotated[app1 + 2 : app1 + 4], "big")]
    assert len(exif_segment) < 2 + len(comment)
    cases["late_exif.jpg"] = plain[:2] + comment + exif_segment + plain[2:]
    cases["late_adobe.jpg"] = plain[:2] + comment + adobe + plain[2:]
    # blocks too short to hold what they announce, which Pillow refuses: an Adobe marker of
    # 5 bytes (Pillow reads a version after it), and an EXIF block of 7 in a file whose JFIF
    # header gives its dpi (Pillow then parses the EXIF and finds no TIFF header in it)
    cases["short_adobe.jpg"] = plain[:2] + _segment(0xEE, b"Adobe") + plain[2:]
    dpi = _save(rgb, tmp_path / "dpi.jpg", dpi=(72, 72)).read_bytes()
    cases["short_exif.jpg"] = dpi[:2] + _segment(0xE1, b"Exif\x00\x00M") + dpi[2:]
    # a JFIF block cut before its version, an ICC block before its sequence numbers: refused
    # by Pillow's header parse; one byte more and Pillow reads them
    for name, marker, payload in (
        ("bare_jfif", 0xE0, b"JFIF"),
        ("short_jfif", 0xE0, b"JFIF\x00\x01"),
        ("jfif_version", 0xE0, b"JFIF\x00\x01\x02"),
        ("bare_icc", 0xE2, b"ICC_PROFILE\x00"),
        ("short_icc", 0xE2, b"ICC_PROFILE\x00\x01"),
        ("icc_numbered", 0xE2, b"ICC_PROFILE\x00\x01\x01"),
    ):
        cases[f"{name}.jpg"] = plain[:2] + _segment(marker, payload) + plain[2:]
        # the same after a 2 KB comment (a negative end index would read from the file's end)
        cases[f"late_{name}.jpg"] = plain[:2] + comment + _segment(marker, payload) + plain[2:]
    # components numbered R, G, B (82, 71, 66) in the frame and scan headers
    sos = plain.index(b"\xff\xda")
    rgb_ids = bytearray(plain)
    for at in (sof + 10, sof + 13, sof + 16, sos + 5, sos + 7, sos + 9):
        rgb_ids[at] = {1: 82, 2: 71, 3: 66}[rgb_ids[at]]
    cases["rgb_ids.jpg"] = bytes(rgb_ids)
    cases["arithmetic.jpg"] = plain[: sof + 1] + b"\xc9" + plain[sof + 2 :]
    cases["no_start_marker.jpg"] = b"\0\0" + plain[2:]
    cmyk = cases["cmyk.jpg"]  # four components, its Adobe marker cut out
    app14 = cmyk.index(b"\xff\xee")
    cmyk = bytearray(cmyk[:app14] + cmyk[app14 + 2 + cmyk[app14 + 3] :])
    assert b"Adobe" not in cmyk
    sof, sos = cmyk.index(b"\xff\xc0"), cmyk.index(b"\xff\xda")  # components 1, 2, 3, 4
    for k, at in enumerate((sof + 10, sof + 13, sof + 16, sof + 19)):
        cmyk[at] = k + 1
    for k, at in enumerate((sos + 5, sos + 7, sos + 9, sos + 11)):
        cmyk[at] = k + 1
    cases["cmyk_no_adobe.jpg"] = bytes(cmyk)
    # the EXIF-carrying files go to Pillow even when upright: the reader does not parse EXIF
    accepted = {"q95_444.jpg", "q75_422.jpg", "q50_420.jpg", "progressive.jpg", "comment.jpg",
                "icc.jpg", "restarts.jpg", "optimized.jpg", "fill_bytes.jpg", "fill_byte.jpg",
                "xmp.jpg", "app14.jpg", "jfif_version.jpg", "icc_numbered.jpg",
                "late_jfif_version.jpg", "late_icc_numbered.jpg"}  # fmt: skip
    got = {name for name, data in cases.items() if decode._plain_jpeg_size(data)}
    assert got == accepted
    for name, data in cases.items():
        for min_side in (None, 7, 8, 15, 16, 30, 31, 40, 80, 100, 166, 167, 10_000):
            for max_pixels in (64_000_000, 517 * 333, 517 * 333 - 1, 97 * 61 - 1):
                expected = _pillow_only_plan(decode, data, max_pixels, min_side)
                assert decode._opencv_plan(data, max_pixels, min_side) == expected, (
                    name, min_side, max_pixels)  # fmt: skip
        path = tmp_path / f"bytes_{name}"
        path.write_bytes(data)  # and the whole path gives Pillow's pixels, or its error
        got, expected = (_outcome(lambda f=f, path=path: np.asarray(f(path, min_side=20)))
                         for f in (decode.load_rgb_array, decode._load_rgb_pillow))  # fmt: skip
        np.testing.assert_array_equal(got, expected, err_msg=name)
    # Pillow refuses more pixels than its own bomb limit whatever max_pixels says: so does this
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", 97 * 61 - 1)
        assert decode._opencv_plan(plain, 64_000_000, None) is None
        m.setattr(Image, "MAX_IMAGE_PIXELS", 97 * 61)
        full = (decode.cv2.IMREAD_COLOR, (61, 97, 3))
        assert decode._opencv_plan(plain, 64_000_000, None) == full


def test_marker_reader_refuses_damaged_headers(tmp_path):
    """Cut or corrupted headers give None (Pillow's path then names the problem), never an
    exception or a made-up size."""
    import fisc.data.decode as decode

    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), np.uint8))
    data = _save(rgb, tmp_path / "a.jpg").read_bytes()
    assert decode._plain_jpeg_size(data) == (50, 40)
    sof = data.index(b"\xff\xc0")
    for cut in range(sof + 12):  # every prefix that ends before the frame header does
        assert decode._plain_jpeg_size(data[:cut]) is None, cut
    broken = bytearray(data)
    broken[2] = 0x00  # the first marker's 0xFF
    assert decode._plain_jpeg_size(bytes(broken)) is None
    twelve_bit = bytearray(data)
    twelve_bit[sof + 4] = 12  # sample precision
    assert decode._plain_jpeg_size(bytes(twelve_bit)) is None


def test_draft_scale_is_pillows(tmp_path):
    """The decode scale computed from the size alone is the one Pillow's draft picks."""
    from fisc.data.decode import _draft, _draft_scale

    # (97, 60) and (60, 97) with min_side 30: the long side asks for 49 px, so Pillow stays at
    # full scale though the short side would allow 1/2
    sizes = [(517, 333), (640, 480), (333, 517), (1024, 97), (97, 97), (160, 120), (100, 97),
             (97, 60), (60, 97)]  # fmt: skip
    for w, h in sizes:
        path = _save(Image.new("RGB", (w, h)), tmp_path / f"{w}x{h}.jpg")
        min_sides = (None, -1, 0, 1, 12, 13, 24, 25, 30, 40, 48, 49, 60, 61, 100, 120, 166, 167,
                     240)  # fmt: skip
        for min_side in min_sides:
            with Image.open(path) as img:
                assert _draft_scale(w, h, min_side) == _draft(img, min_side), (w, h, min_side)


def test_mpo_files_decode_at_their_first_picture_s_reduced_scale_by_both_paths(tmp_path):
    """A multi-picture JPEG (MPO, as cameras write) is drafted like a JPEG: the OpenCV path,
    which reads its markers as a plain JPEG's, and Pillow's path give the same pixels at the
    same scale; min_side 0 decodes in full, like None."""
    import fisc.data.decode as decode

    rng = np.random.default_rng(1)
    first, second = (Image.fromarray(rng.integers(0, 255, (400, 600, 3), np.uint8)) for _ in "ab")
    path = tmp_path / "two.mpo"
    first.save(path, format="MPO", save_all=True, append_images=[second])
    assert Image.open(path).format == "MPO"
    cases = {100: (100, 150, 3), 1: (50, 75, 3), 0: (400, 600, 3), None: (400, 600, 3)}
    for min_side, shape in cases.items():  # 1 px: the smallest scale libjpeg has, 1/8
        fast = decode.load_rgb_array(path, min_side=min_side)
        assert fast.shape == shape, min_side
        np.testing.assert_array_equal(
            fast, np.asarray(decode._load_rgb_pillow(path, min_side=min_side))
        )


def test_cv2_decode_rgb_refuses_flags_that_are_not_colour():
    """OpenCV's RGB flag would turn a grayscale request into a colour decode: refused."""
    from fisc.data.decode import cv2_decode_rgb

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    data = np.frombuffer(buf.getvalue(), np.uint8)
    with pytest.raises(ValueError, match="colour"):
        cv2_decode_rgb(data, cv2.IMREAD_GRAYSCALE)
    assert cv2_decode_rgb(data).shape == (8, 8, 3)


def test_cv2_decode_rgb_gives_none_for_what_opencv_cannot_decode(monkeypatch):
    """On either OpenCV (one that decodes to RGB itself, or to BGR then swapped), bytes it
    cannot decode give None, which sends the file to Pillow's path."""
    import fisc.data.decode as decode

    garbage = np.frombuffer(b"\xff\xd8 not a JPEG after all", np.uint8)
    assert decode.cv2_decode_rgb(garbage) is None
    monkeypatch.setattr(decode, "_IMREAD_RGB", None)
    assert decode.cv2_decode_rgb(garbage) is None
