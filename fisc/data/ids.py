"""DISC21 image ids: ``Q%05d`` (queries), ``R%06d`` (references), ``T%06d`` (training)."""

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


def id_index(image_id: str) -> int:
    """Numeric part of an id: ``id_index("R000123") == 123``."""
    return int(image_id[1:])
