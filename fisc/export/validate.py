"""Checks of a DISC21 descriptor submission file (see docs/protocol.md, "A descriptor submission").

``validate_submission`` returns every failed check as one readable line; an empty list means
the file is valid. ``main`` is the ``fisc validate-submission`` command.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from fisc.data.ids import ID_FORMATS, is_valid_id

MAX_DIMS = 256
DATASETS = ("query", "reference", "query_ids", "reference_ids")
_EXAMPLES = 5


def _examples(items: Sequence) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:_EXAMPLES])
    return f"e.g. {shown}" + (", ..." if len(items) > _EXAMPLES else "")


def _check_vectors(name: str, data: np.ndarray, failures: list[str]) -> int | None:
    """Shape, dtype and finiteness of one vector dataset; its dims if it is 2-D."""
    if data.ndim != 2:
        failures.append(f"{name}: expected a 2-D array (n x d), got shape {data.shape}")
        return None
    if data.dtype != np.float32:
        failures.append(f"{name}: dtype {data.dtype}, expected float32")
    if np.issubdtype(data.dtype, np.number):
        bad = np.flatnonzero(~np.isfinite(data.astype(np.float64, copy=False)).all(axis=1))
        if len(bad):
            failures.append(
                f"{name}: {len(bad)} rows with NaN or inf values (rows {_examples(bad.tolist())})"
            )
    else:
        failures.append(f"{name}: dtype {data.dtype} is not numeric")
    return int(data.shape[1])


def _check_ids(split: str, name: str, raw: np.ndarray, failures: list[str]) -> list[str] | None:
    """Encoding, format, uniqueness and order of one id dataset; the ids as str if readable."""
    if raw.ndim != 1:
        failures.append(f"{name}: expected a 1-D array of ids, got shape {raw.shape}")
        return None
    if raw.dtype.kind != "S":
        failures.append(f"{name}: dtype {raw.dtype}, expected ASCII bytes (e.g. S6/S7)")
    ids: list[str] = []
    non_ascii = []
    for value in raw.tolist():
        if isinstance(value, bytes):
            try:
                ids.append(value.decode("ascii"))
            except UnicodeDecodeError:
                non_ascii.append(value)
                ids.append(value.decode("latin-1"))
        else:
            ids.append(str(value))
    if non_ascii:
        failures.append(f"{name}: {len(non_ascii)} ids are not ASCII ({_examples(non_ascii)})")
    prefix, width = ID_FORMATS[split]
    malformed = [i for i in ids if not is_valid_id(split, i)]
    if malformed:
        failures.append(
            f"{name}: {len(malformed)} malformed ids, expected {prefix} + {width} digits "
            f"({_examples(malformed)})"
        )
    unique, counts = np.unique(np.asarray(ids, dtype=object).astype(str), return_counts=True)
    dups = unique[counts > 1].tolist()
    if dups:
        failures.append(f"{name}: {len(dups)} duplicate ids ({_examples(dups)})")
    unsorted = [i for i in range(1, len(ids)) if ids[i] < ids[i - 1]]
    if unsorted:
        first = unsorted[0]
        failures.append(
            f"{name}: ids are not sorted ({len(unsorted)} rows out of order, first at row "
            f"{first}: {ids[first - 1]!r} before {ids[first]!r})"
        )
    return ids


def _compare(
    name: str,
    found: Sequence[str],
    expected: Sequence[str],
    failures: list[str],
    complete: bool = True,
) -> None:
    have, want = set(found), set(expected)
    missing = sorted(want - have)
    extra = sorted(have - want) if complete else []
    if missing:
        failures.append(
            f"{name}: {len(missing)} ids of the list are missing from the file "
            f"({_examples(missing)})"
        )
    if extra:
        failures.append(
            f"{name}: {len(extra)} ids in the file are not in the list ({_examples(extra)})"
        )


def validate_submission(
    path: str | Path,
    query_ids: Sequence[str] | None = None,
    reference_ids: Sequence[str] | None = None,
    max_dims: int = MAX_DIMS,
    reference_ids_complete: bool = True,
) -> list[str]:
    """Every failed check of the submission at ``path``, one line each (empty: valid).

    With ``query_ids``/``reference_ids`` the file's id sets must equal them
    (``reference_ids_complete=False``: only check the listed references are present).
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path}: file does not exist"]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"{path}: not a readable HDF5 file ({e})"]
    failures: list[str] = []
    with f:
        missing = [n for n in DATASETS if n not in f or not isinstance(f[n], h5py.Dataset)]
        for name in missing:
            failures.append(f"missing dataset {name!r} (file has {sorted(f.keys())})")
        dims: dict[str, int | None] = {}
        ids: dict[str, list[str] | None] = {}
        counts: dict[str, int] = {}
        for split in ("query", "reference"):
            if split not in missing:
                data = f[split][()]
                counts[split] = int(data.shape[0]) if data.ndim >= 1 else 0
                dims[split] = _check_vectors(split, data, failures)
            if f"{split}_ids" not in missing:
                ids[split] = _check_ids(split, f"{split}_ids", f[f"{split}_ids"][()], failures)
    for split in ("query", "reference"):
        d = dims.get(split)
        if d is not None and not 1 <= d <= max_dims:
            failures.append(f"{split}: {d} dims, expected 1 to {max_dims}")
        if split in counts and ids.get(split) is not None and counts[split] != len(ids[split]):
            failures.append(
                f"{split}: {counts[split]} rows but {len(ids[split])} ids in {split}_ids"
            )
    if dims.get("query") is not None and dims.get("reference") is not None:
        if dims["query"] != dims["reference"]:
            failures.append(f"query has {dims['query']} dims but reference has {dims['reference']}")
    if query_ids is not None and ids.get("query") is not None:
        _compare("query_ids", ids["query"], query_ids, failures)
    if reference_ids is not None and ids.get("reference") is not None:
        _compare(
            "reference_ids",
            ids["reference"],
            reference_ids,
            failures,
            complete=reference_ids_complete,
        )
    return failures


def read_id_list(path: str | Path, split: str) -> tuple[list[str], bool]:
    """Ids of ``split`` listed in ``path``, and whether the list is complete.

    ``path`` is a text file of ids, one per line, or a ground-truth CSV
    (``query_id,reference_id``): its query column lists every query, its reference column
    only the references that are matched (an incomplete list: only presence is checked).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    first = lines[0].strip().replace(" ", "") if lines else ""
    if first == "query_id,reference_id":
        column = 0 if split == "query" else 1
        out = []
        for row in csv.reader(lines[1:]):
            if len(row) > column and row[column].strip():
                out.append(row[column].strip())
        return sorted(set(out)), split == "query"
    return [s.strip() for s in lines if s.strip()], True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fisc validate-submission",
        description="Check a DISC21 descriptor submission file against docs/protocol.md.",
    )
    parser.add_argument("file", help="submission HDF5 file")
    parser.add_argument("--queries", help="query ids: a text file (one per line) or a GT CSV")
    parser.add_argument("--references", help="reference ids: a text file or a GT CSV")
    parser.add_argument("--max-dims", type=int, default=MAX_DIMS)
    args = parser.parse_args(argv)
    queries = read_id_list(args.queries, "query")[0] if args.queries else None
    references, complete = (
        read_id_list(args.references, "reference") if args.references else (None, True)
    )
    failures = validate_submission(
        args.file, queries, references, args.max_dims, reference_ids_complete=complete
    )
    if failures:
        print(f"{args.file}: INVALID, {len(failures)} failed checks:")
        for line in failures:
            print(f"  - {line}")
        return 1
    print(f"{args.file}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
