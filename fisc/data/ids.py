"""DISC21 image ids: ``Q%05d`` (queries), ``R%06d`` (references), ``T%06d`` (training).

Evaluation takes any id scheme (DISC21's formats are checked only when asked: ``fisc evaluate
--disc-ids``); names read from descriptor files and ground truth go through
:func:`normalise_name`. A submission file (Phase 1/2) must use DISC21's ids."""

from __future__ import annotations

import re

ID_FORMATS = {"query": ("Q", 5), "reference": ("R", 6), "training": ("T", 6)}
_PATTERNS = {split: re.compile(rf"^{p}\d{{{n}}}$") for split, (p, n) in ID_FORMATS.items()}


class BadIdError(ValueError):
    """An id that does not follow the DISC21 format of its split."""


def format_id(split: str, index: int) -> str:
    """``format_id("query", 7) == "Q00007"``."""
    prefix, width = ID_FORMATS[split]
    if not 0 <= index < 10**width:
        raise BadIdError(f"{split} index {index} does not fit {prefix}{'#' * width}")
    return f"{prefix}{index:0{width}d}"


def is_valid_id(split: str, image_id: str) -> bool:
    return bool(_PATTERNS[split].match(image_id))


def check_id(split: str, image_id: str) -> str:
    """Return ``image_id`` or raise :class:`BadIdError` naming the expected format."""
    if not is_valid_id(split, image_id):
        prefix, width = ID_FORMATS[split]
        raise BadIdError(f"{image_id!r} is not a {split} id (expected {prefix} + {width} digits)")
    return image_id


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def normalise_name(name: str) -> str:
    """An image name as an id: without directories and without an image file extension, as
    descriptor files written by other tools name their rows (``"query/Q00042.jpg"`` ->
    ``"Q00042"``, ``"a\\b\\img_7.PNG"`` -> ``"img_7"``). Other names are kept as they are."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if dot and stem and f".{ext.lower()}" in IMAGE_EXTENSIONS:
        return stem
    return base


def id_index(image_id: str) -> int:
    """Numeric part of an id: ``id_index("R000123") == 123``."""
    return int(image_id[1:])
