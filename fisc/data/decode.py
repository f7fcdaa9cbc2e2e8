"""Safe image decoding: every odd-but-valid image becomes RGB; every bad file raises an error that
names it.

Handled: grayscale, palette, CMYK, RGBA/LA and colour-keyed transparency at every PNG bit depth
(composited on white; :func:`_honour_png_colour_key` for the keys Pillow misapplies), 16-bit and
float images (rescaled to 8 bit), EXIF orientation (applied), decompression bombs (refused above
``max_pixels`` or Pillow's own limit, ``Image.MAX_IMAGE_PIXELS``, whichever is lower), corrupt,
truncated, zero-byte and non-image files (:class:`ImageDecodeError`).

One path for every caller: :func:`load_rgb_array` (training) and :func:`load_rgb` (the same
pixels as a Pillow image: evaluation, extraction, export, pHash). OpenCV decodes the plain RGB
JPEGs; everything else goes through Pillow (:func:`_load_rgb_pillow`).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; DISC21 images are far smaller
_ALPHA_BACKGROUND = (255, 255, 255)


class ImageDecodeError(RuntimeError):
    """An image file that cannot be turned into an RGB picture; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str | None = None):
        # one-argument form: torch re-raises a DataLoader worker's error as type(e)(message)
        self.path = str(path)
        self.reason = reason
        super().__init__(self.path if reason is None else f"cannot decode image {path}: {reason}")


def _to_8bit_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else float(max(arr.max(), 1.0))
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        key = img.info.get("transparency")
        if isinstance(key, int):  # a 16-bit grayscale PNG's colour key (tRNS), in its own values
            rgb = np.repeat(gray[..., None], 3, axis=2)
            rgb[arr == key] = _ALPHA_BACKGROUND
            return Image.fromarray(rgb)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("P", "1", "L", "RGB") and "transparency" in img.info:  # a colour key (PNG tRNS):
        mode = "RGBA"  # Pillow's convert("RGBA") below makes the keyed colour transparent
    if mode in ("RGBA", "LA", "RGBa", "PA"):  # (Pillow cannot convert "La", which no file opens as)
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> Image.Image:
    """Decode ``path`` fully into an RGB :class:`PIL.Image.Image`, or raise
    :class:`ImageDecodeError`. ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, much cheaper than decoding in full and resizing) as long as its
    shorter side stays at least ``min_side`` pixels; other formats decode in full. The pixels
    of :func:`load_rgb_array`."""
    return Image.fromarray(load_rgb_array(path, max_pixels, min_side))


def _load_rgb_pillow(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> Image.Image:
    """:func:`load_rgb` by Pillow alone: every format and mode, and the errors."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageDecodeError(path, f"cannot read file ({e.strerror or e})") from e
    if size == 0:
        raise ImageDecodeError(path, "zero-byte file")
    try:
        # Pillow warns at open past its own limit (Image.MAX_IMAGE_PIXELS, 89 M pixels unless
        # changed) and raises past twice it: the warning refuses the file too, so that a file is
        # refused above max_pixels or that limit, whichever is lower (_opencv_plan agrees)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(
                        path, f"{w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}"
                    )
                if w == 0 or h == 0:
                    raise ImageDecodeError(path, f"empty image {w}x{h}")
                _draft(img, min_side)
                rawmode = _png_rawmode(img)
                img.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
                img = _honour_png_colour_key(img, rawmode, path)
                img = ImageOps.exif_transpose(img)
                return _to_8bit_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(path, "not an image file (unidentified format)") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(path, f"{type(e).__name__}: {e}") from e
    except Image.DecompressionBombWarning as e:
        raise ImageDecodeError(path, f"decompression bomb: {e}") from e


def _png_rawmode(img: Image.Image) -> str | None:
    """The raw pixel layout of a PNG before :meth:`load` (which clears ``tile``): ``"L;2"``,
    ``"RGB;16B"``, ...; None for other formats."""
    return img.tile[0][3] if img.format == "PNG" and img.tile else None


# raw 2- and 4-bit grayscale: (levels, step); Pillow unpacks level v as v x step (0-255)
_GRAY_LEVELS = {"L;2": (4, 85), "L;4": (16, 17)}


def _honour_png_colour_key(img: Image.Image, rawmode: str | None, path: Path) -> Image.Image:
    """The two PNG colour keys (``tRNS``) Pillow's ``convert("RGBA")`` misapplies, applied:

    - 2- and 4-bit grayscale: Pillow scales the pixels to 0-255 but not the key; the key is
      scaled the same way, its bits above the depth ignored (as libpng does).
    - 16-bit RGB: Pillow keeps each sample's high byte but compares the whole 16-bit key, so
      it keys other pixels than the key's (those whose high bytes equal the key's low bytes).
      The file is decoded again keeping the low bytes (Pillow's little-endian unpacker on the
      big-endian samples), and exactly the pixels whose 16-bit samples equal the key become
      transparent (an alpha band).

    Called before the EXIF rotation, on the pixels as stored. Every other image is returned
    as it is (8-bit and 1-bit keys Pillow applies itself, 16-bit grayscale ones
    :func:`_to_8bit_rgb`)."""
    key = img.info.get("transparency")
    if rawmode in _GRAY_LEVELS and isinstance(key, int):
        levels, step = _GRAY_LEVELS[rawmode]
        img.info["transparency"] = key % levels * step
    elif rawmode == "RGB;16B" and isinstance(key, tuple) and len(key) == 3:
        with Image.open(path) as low:
            low.tile = [(*tile[:3], "RGB;16L") for tile in low.tile]
            low.load()
            deep = np.asarray(img, np.uint16) << 8 | np.asarray(low)  # uint16 | uint8: uint16
        keyed = (deep == key).all(axis=2)
        img.putalpha(Image.fromarray(np.where(keyed, 0, 255).astype(np.uint8)))
    return img


def _draft_request(w: int, h: int, min_side: int | None) -> tuple[int, int] | None:
    """The size Pillow's draft is asked for: a ``w x h`` JPEG scaled so that its shorter side
    is ``min_side`` (draft picks the smallest DCT scale at least this size); None: decode in
    full (no ``min_side``, one of 0 or less, or not even 1/2 scale keeps it)."""
    if min_side is None or min_side <= 0 or min(w, h) < 2 * min_side:
        return None
    f = min_side / min(w, h)
    return math.ceil(w * f), math.ceil(h * f)


def _draft(img: Image.Image, min_side: int | None) -> int:
    """Ask Pillow to decode the JPEG ``img`` at 1/2, 1/4 or 1/8 scale if its shorter side stays
    at least ``min_side``; returns the scale divisor chosen (1: full size)."""
    w, h = img.size
    size = _draft_request(w, h, min_side)
    if size is None or img.format not in ("JPEG", "MPO"):  # MPO: a multi-picture JPEG
        return 1
    drafted = img.draft(img.mode, size)
    return 1 if drafted is None else round(w / drafted[1][2])


_CV2_JPEG_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# OpenCV >= 4.11 has libjpeg-turbo write RGB itself (the same pixels as its BGR output
# swapped, without the extra pass: 5-7% of a 615 px decode here); older ones decode to BGR
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def cv2_decode_rgb(buf: np.ndarray, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imdecode(buf, flags)`` as RGB (``flags``: one of :data:`_CV2_JPEG_FLAGS`' values,
    optionally with ``IMREAD_IGNORE_ORIENTATION``); None where OpenCV decodes nothing."""
    if not flags & cv2.IMREAD_COLOR:
        raise ValueError(f"cv2_decode_rgb decodes colour images; flags {flags} are not")
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buf, (flags & ~cv2.IMREAD_COLOR) | _IMREAD_RGB)
    img = cv2.imdecode(buf, flags)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)


_EXIF_ORIENTATION = 0x0112


def load_rgb_array(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> np.ndarray:
    """The decoded picture as an ``HxWx3`` uint8 array, pixel for pixel
    ``np.asarray(_load_rgb_pillow(path, max_pixels, min_side))``, faster for the common case:
    an RGB JPEG without an EXIF rotation is decoded by OpenCV (the libjpeg-turbo in its wheel,
    about twice as fast as Pillow's decode plus conversion here, same pixels), at the DCT scale
    Pillow's path picks. Every other file, and every file OpenCV refuses (truncated data:
    OpenCV returns nothing), goes through :func:`_load_rgb_pillow`, which decodes it or raises
    :class:`ImageDecodeError`. The array is read-only either way, so that no edit of one
    training view can change the pixels the other view starts from."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    plan = _opencv_plan(data, max_pixels, min_side) if data else None
    if plan is not None:
        flags, shape = plan
        img = cv2_decode_rgb(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is not None and img.shape == shape:
            img.flags.writeable = False  # as np.asarray of a Pillow image
            return img
    return np.asarray(_load_rgb_pillow(path, max_pixels, min_side))


def _draft_scale(w: int, h: int, min_side: int | None) -> int:
    """The divisor (1, 2, 4 or 8) :func:`_draft` makes Pillow decode a ``w x h`` JPEG at,
    by Pillow's own arithmetic (its ``JpegImageFile.draft``)."""
    size = _draft_request(w, h, min_side)
    if size is None:
        return 1
    scale = min(w // size[0], h // size[1])
    return next(s for s in (8, 4, 2, 1) if scale >= s)


# start-of-frame markers of baseline, extended and progressive Huffman-coded JPEGs (a file
# with another frame type, or whose scan comes first, runs out of markers: None)
_SOF_HUFFMAN = (0xC0, 0xC1, 0xC2)


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of the commonest JPEG, read from its markers without Pillow: an
    8-bit Huffman-coded YCbCr picture (three components numbered 1, 2, 3, as libjpeg writes)
    with no EXIF block (so no rotation) and no Adobe marker (which can declare other colour
    transforms). None for anything else, which :func:`_opencv_plan` then asks Pillow about."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")  # the segment's, with itself
        if marker in _SOF_HUFFMAN:
            segment = data[i + 4 : i + 2 + length]
            if len(segment) < 15 or segment[0] != 8 or segment[5] != 3:
                return None
            if (segment[6], segment[9], segment[12]) != (1, 2, 3):
                return None
            return int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big")
        # other segments (ICC profiles, thumbnails: up to 64 KB) are looked at, not copied
        if marker == 0xE1 and data.startswith(b"Exif", i + 4, i + 2 + length):
            return None
        if marker == 0xEE and data.startswith(b"Adobe", i + 4, i + 2 + length):
            return None
        # blocks too short for what Pillow's header parse reads of them, so that it refuses the
        # file: a JFIF block without its version, an ICC block without its sequence numbers
        if marker == 0xE0 and length < 9 and data.startswith(b"JFIF", i + 4, i + 2 + length):
            return None
        if (
            marker == 0xE2
            and length < 16
            and data.startswith(b"ICC_PROFILE\0", i + 4, i + 2 + length)
        ):
            return None
        i += 2 + length
    return None


def _opencv_plan(
    data: bytes, max_pixels: int, min_side: int | None
) -> tuple[int, tuple[int, int, int]] | None:
    """OpenCV's decode flags and the expected shape for a JPEG that :func:`_load_rgb_pillow`
    would return unchanged apart from the scale (RGB, within ``max_pixels``, no EXIF rotation);
    None for anything else. The commonest JPEGs are recognised from their markers
    (:func:`_plain_jpeg_size`, about a tenth of Pillow's header parse); Pillow reads the
    header of the others."""
    size = _plain_jpeg_size(data)
    if size is not None:
        w, h = size
        limit = Image.MAX_IMAGE_PIXELS  # Pillow's bomb warning, which its path refuses
        if 0 < w * h <= max_pixels and (limit is None or w * h <= limit):
            scale = _draft_scale(w, h, min_side)
            return _CV2_JPEG_FLAGS[scale], (-(-h // scale), -(-w // scale), 3)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if img.format != "JPEG" or img.mode != "RGB" or not 0 < w * h <= max_pixels:
                    return None
                if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    return None
                scale = _draft(img, min_side)
                w, h = img.size
                return _CV2_JPEG_FLAGS[scale], (h, w, 3)
    except Exception:  # noqa: BLE001 - _load_rgb_pillow says what is wrong with the file
        return None
