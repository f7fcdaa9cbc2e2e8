"""File I/O shared by every writer and reader: atomic writes (JSON files among them), and CSV
rows with located errors.

Light imports only (the standard library).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same filesystem); on success it is flushed to
    disk and replaces ``path`` atomically: a kill leaves the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """``obj`` as JSON text (``json.dumps`` with ``indent`` and ``sort_keys``, ASCII) and a
    final newline, written to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", encoding="utf-8")


def _fsync(path: str | Path) -> None:
    if Path(path).is_dir() and os.name == "nt":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_csv_rows(
    path: str | Path, header: Sequence[str], header_optional: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """The data rows of a CSV file as ``(line, fields)``: ``line`` is the row's line number
    (1-based, for error messages), ``fields`` its cells with surrounding white space stripped.

    Blank lines are skipped. The first non-blank row must be ``header`` (cells compared
    stripped), or, with ``header_optional``, may be; every data row must have as many cells
    as ``header``. A UTF-8 byte-order mark is ignored. Errors (``ValueError``) name the file
    and the line.
    """
    path = Path(path)
    expected = ",".join(header)
    first = True
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            fields = [c.strip() for c in row]
            if not any(fields):
                continue  # blank line
            if first:
                first = False
                if fields == list(header):
                    continue
                if not header_optional:
                    raise ValueError(f"{where}: expected header {expected!r}, got {row!r}")
            if len(fields) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} fields ({expected}), got {len(fields)}: "
                    f"{row!r}"
                )
            yield line, fields
    if first and not header_optional:
        raise ValueError(f"{path}:1: expected header {expected!r}, got an empty file")
