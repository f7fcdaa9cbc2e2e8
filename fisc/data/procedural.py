"""Source images for :mod:`fisc.data.minidisc`: procedural pictures and offline photos.

:func:`procedural_image` draws a picture from a seeded generator: a background (smooth
colour field, fractal noise, linear or radial gradient, stripes or checker) with 3-14
shapes (ellipses, polygons, rectangles, lines, blobs, scribbles), some filled with a
texture, with edges anti-aliased (masks drawn at 2x and downsampled).

:func:`photo_names` / :func:`load_photo` give the real photos that ship with
scikit-image and load without a download; :func:`photo_variant` cuts one of 16 disjoint
cells of a photo (so two variants of one photo never show the same pixels) and gives it
a random colour treatment.
"""

from __future__ import annotations

import colorsys
import functools
import logging

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

# Photos bundled with scikit-image (no pooch download); small or flat ones left out.
# (``cat`` is ``chelsea``; of the stereo pair only the left view is used.)
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "motorcycle_left",
    "retina",
    "rocket",
)
PHOTO_GRID = 4  # each photo is cut into PHOTO_GRID**2 disjoint cells, one per variant
MAX_VARIANTS = PHOTO_GRID * PHOTO_GRID


def target_size(rng: np.random.Generator, longest: int) -> tuple[int, int]:
    """(width, height) with the given longest side and aspect ratio w/h in 0.6-1.6."""
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    if aspect >= 1:
        return longest, max(1, round(longest / aspect))
    return max(1, round(longest * aspect)), longest


# --------------------------------------------------------------------------- procedural


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` colours (float 0-1, shape n x 3) around a random base hue."""
    base = rng.random()
    out = []
    for _ in range(n):
        hue = (base + rng.normal(0, 0.15) + (0.5 if rng.random() < 0.3 else 0)) % 1.0
        out.append(colorsys.hsv_to_rgb(hue, rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0)))
    return np.array(out, dtype=np.float32)


def _upsampled_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    gw, gh = max(2, round(cells * w / max(w, h))), max(2, round(cells * h / max(w, h)))
    im = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    return np.asarray(im.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def _coords(w: int, h: int, rng: np.random.Generator):
    yy, xx = np.ogrid[0:h, 0:w]
    theta = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    return xx * c + yy * s, yy * c - xx * s


def _scalar_field(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A float32 (h, w) map in [0, 1]: noise, gradient, stripes or checker."""
    kind = int(rng.integers(5))
    if kind == 0:  # fractal noise
        t = sum(_upsampled_noise(rng, w, h, 2 ** (o + 2)) / 2**o for o in range(4))
    elif kind == 1:  # linear gradient
        u, _ = _coords(w, h, rng)
        t = u + np.zeros((h, w), np.float32)
    elif kind == 2:  # radial gradient
        yy, xx = np.ogrid[0:h, 0:w]
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy).astype(np.float32) / (rng.uniform(0.4, 1.2) * max(w, h))
        return np.clip(t, 0, 1)
    else:
        u, v = _coords(w, h, rng)
        period = rng.uniform(2, 20) * max(w, h) / 160
        if kind == 3:  # stripes, hard or soft
            t = np.sin(u * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3)))
            if rng.random() < 0.5:
                t = (t > rng.uniform(-0.5, 0.5)).astype(np.float32)
        else:  # checker
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    t = t - t.min()
    return t / max(float(t.max()), 1e-6)


def _texture(rng: np.random.Generator, w: int, h: int, pal: np.ndarray) -> Image.Image:
    """An RGB texture of size (w, h)."""
    if rng.random() < 1 / 6:  # smooth colour field
        rgb = np.stack([_upsampled_noise(rng, w, h, int(rng.integers(2, 7))) for _ in range(3)], 2)
        im = Image.fromarray(rgb.astype(np.uint8))
    else:
        c0, c1 = pal[rng.integers(len(pal))], pal[rng.integers(len(pal))]
        if np.abs(c0 - c1).sum() < 0.3:
            c1 = 1.0 - c0
        lut = 255 * (c0 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0))
        im = Image.fromarray((_scalar_field(rng, w, h) * 255).astype(np.uint8))
        im = im.convert("P")
        im.putpalette(lut.round().astype(np.uint8).tobytes())
        im = im.convert("RGB")
    return im


def _shape_mask(rng: np.random.Generator, w: int, h: int, alpha: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    s = max(w, h)
    cx, cy = rng.uniform(0.0, 1.0) * w, rng.uniform(0.0, 1.0) * h
    r = rng.uniform(0.05, 0.4) * s
    kind = int(rng.integers(7))
    if kind == 0:  # ellipse
        rx, ry = r * rng.uniform(0.4, 1.0), r * rng.uniform(0.4, 1.0)
        d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=alpha)
    elif kind == 1:  # ring
        width = max(2, round(r * rng.uniform(0.1, 0.4)))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=alpha, width=width)
    elif kind == 2:  # rotated rectangle
        a, rx, ry = rng.uniform(0, np.pi), r, r * rng.uniform(0.2, 1.0)
        corners = [(-rx, -ry), (rx, -ry), (rx, ry), (-rx, ry)]
        d.polygon(
            [
                (cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a))
                for x, y in corners
            ],
            fill=alpha,
        )
    elif kind == 3:  # polygon (maybe star-like)
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.3, 1.0, n)
        pts = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
        d.polygon(list(zip(*pts, strict=True)), fill=alpha)
    elif kind == 4:  # thick lines
        for _ in range(int(rng.integers(1, 4))):
            x0, y0, x1, y1 = rng.uniform(0, 1, 4) * [w, h, w, h]
            d.line((x0, y0, x1, y1), fill=alpha, width=max(2, round(rng.uniform(0.01, 0.06) * s)))
    elif kind == 5:  # blob of overlapping circles
        for _ in range(int(rng.integers(3, 9))):
            ox, oy, q = rng.normal(0, r * 0.5, 2).tolist() + [r * rng.uniform(0.2, 0.6)]
            d.ellipse((cx + ox - q, cy + oy - q, cx + ox + q, cy + oy + q), fill=alpha)
    else:  # scribble: a random walk
        steps = rng.normal(0, r * 0.35, (int(rng.integers(4, 12)), 2)).cumsum(axis=0)
        pts = [(cx + x, cy + y) for x, y in steps]
        d.line(pts, fill=alpha, width=max(2, round(rng.uniform(0.005, 0.03) * s)), joint="curve")
    return mask


def procedural_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random picture of ``width`` x ``height`` (RGB), fully determined by ``rng``."""
    pal = _palette(rng, int(rng.integers(2, 6)))
    out = _texture(rng, width, height, pal)
    for _ in range(int(rng.integers(3, 15))):
        alpha = int(rng.integers(150, 256))
        # shapes are drawn at 2x and the mask downsampled (anti-aliased edges), only
        # over the shape's bounding box
        big = _shape_mask(rng, 2 * width, 2 * height, alpha)
        if rng.random() < 0.25:
            fill: Image.Image | tuple[int, ...] = _texture(rng, width, height, pal)
        else:
            c = pal[rng.integers(len(pal))] if rng.random() < 0.7 else rng.random(3)
            fill = tuple(int(v * 255) for v in c)
        bbox = big.getbbox()
        if bbox is None:
            continue
        x0, y0 = bbox[0] // 2, bbox[1] // 2
        x1, y1 = min(width, (bbox[2] + 1) // 2), min(height, (bbox[3] + 1) // 2)
        mask = big.crop((2 * x0, 2 * y0, 2 * x1, 2 * y1)).resize(
            (x1 - x0, y1 - y0), Image.Resampling.BOX
        )
        if isinstance(fill, Image.Image):
            fill = fill.crop((x0, y0, x1, y1))
        out.paste(fill, (x0, y0, x1, y1), mask)
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.4:
        noisy = np.asarray(out, dtype=np.float32) + rng.normal(
            0, rng.uniform(2, 8), (height, width, 1)
        )
        out = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    return out


# --------------------------------------------------------------------------- photos


@functools.cache
def load_photo(name: str) -> np.ndarray | None:
    """The named scikit-image photo as an RGB uint8 array, or None if it cannot be loaded."""
    try:
        import skimage.data as skdata

        arr = (
            skdata.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skdata, name)()
        )
    except Exception as exc:  # noqa: BLE001 - any failure just means "not available"
        log.info("skimage photo %s unavailable: %s", name, exc)
        return None
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


@functools.lru_cache(maxsize=1)
def photo_names() -> tuple[str, ...]:
    """The photos of :data:`SKIMAGE_PHOTOS` that load here, sorted."""
    return tuple(n for n in sorted(SKIMAGE_PHOTOS) if load_photo(n) is not None)


def photo_variant(
    photo: np.ndarray, cell: int, rng: np.random.Generator, size: tuple[int, int]
) -> Image.Image | None:
    """Crop inside grid cell ``cell`` (0..15) of ``photo``, colour-treat, resize to ``size``.

    Returns None when the crop is nearly flat (e.g. the black corners of ``retina``).
    """
    H, W = photo.shape[:2]
    gx, gy = cell % PHOTO_GRID, cell // PHOTO_GRID
    x0, x1 = W * gx // PHOTO_GRID, W * (gx + 1) // PHOTO_GRID
    y0, y1 = H * gy // PHOTO_GRID, H * (gy + 1) // PHOTO_GRID
    cw, ch = x1 - x0, y1 - y0
    aspect = size[0] / size[1]
    frac = rng.uniform(0.75, 1.0)
    bw = min(cw, ch * aspect) * frac
    bh = bw / aspect
    bx = x0 + rng.uniform(0, cw - bw)
    by = y0 + rng.uniform(0, ch - bh)
    box = (
        round(bx),
        round(by),
        max(round(bx) + 1, round(bx + bw)),
        max(round(by) + 1, round(by + bh)),
    )
    crop = photo[box[1] : box[3], box[0] : box[2]].astype(np.float32) / 255.0
    if crop.std() < 0.05:
        return None
    gray = np.allclose(crop[..., 0], crop[..., 1]) and np.allclose(crop[..., 1], crop[..., 2])
    kind = int(rng.integers(4))
    if gray or kind == 0:  # tint: map luminance between two random colours
        lum = crop.mean(axis=2, keepdims=True)
        c0, c1 = rng.uniform(0, 0.4, 3), rng.uniform(0.6, 1.0, 3)
        crop = c0 + lum * (c1 - c0) if rng.random() < 0.8 or not gray else lum.repeat(3, 2)
    elif kind == 1:
        crop = crop[..., rng.permutation(3)]
    elif kind == 2:
        crop = crop ** rng.uniform(0.6, 1.6, 3)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    im = Image.fromarray((np.clip(crop, 0, 1) * 255).round().astype(np.uint8))
    return im.resize(size, Image.Resampling.LANCZOS)
