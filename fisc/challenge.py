"""The challenge's rules (ISC 2021 Descriptor Track, DISC21; see docs/protocol.md): the
descriptor size limit, the ground-truth file, id lists, and the checks of a submission.

One set of submission checks serves both a submission file (:func:`validate_submission`, the
``fisc validate-submission`` command) and descriptors in memory before they are scored
(:func:`check_submission_descriptors`); :func:`submission_problems` holds them. Every failed
check is one readable line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fisc.data.ids import ID_FORMATS, BadIdError, check_id, is_valid_id, normalise_name
from fisc.files import read_csv_rows

if TYPE_CHECKING:
    from fisc.descriptors import Descriptors

MAX_DIMS = 256  # descriptor dimensions allowed by the challenge
SPLITS = ("query", "reference")
SUBMISSION_DATASETS = ("query", "reference", "query_ids", "reference_ids")
GROUND_TRUTH_HEADER = ("query_id", "reference_id")
_EXAMPLES = 5


# --- ground truth and id lists ------------------------------------------------------------


def load_ground_truth(path: str | Path, disc_ids: bool = False) -> dict[str, str | None]:
    """Read a ``query_id,reference_id`` CSV; an empty reference means "no match" (``None``).
    Names are normalised (:func:`fisc.data.ids.normalise_name`); ``disc_ids``: every id must
    have DISC21's format. Errors name the file and line."""
    path = Path(path)
    gt: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    for line, (q, r) in read_csv_rows(path, GROUND_TRUTH_HEADER):
        q, r = normalise_name(q), normalise_name(r)
        if not q:
            raise ValueError(f"{path}:{line}: empty query id")
        if disc_ids:
            check_ids_at(f"{path}:{line}", q, r or None)
        if q in gt:
            raise ValueError(
                f"{path}:{line}: duplicate query id {q!r} (first on line {first_line[q]})"
            )
        gt[q] = r or None
        first_line[q] = line
    return gt


def check_ids_at(where: str, query_id: str, reference_id: str | None) -> None:
    """Raise ``ValueError`` starting with ``where`` (e.g. ``"gt.csv:7"``) unless the query id
    and the reference id (``None``: none) have DISC21's formats."""
    try:
        check_id("query", query_id)
        if reference_id is not None:
            check_id("reference", reference_id)
    except BadIdError as e:
        raise ValueError(f"{where}: {e}") from None


def read_id_list(path: str | Path, split: str) -> tuple[list[str], bool]:
    """Ids of ``split`` listed in ``path``, and whether the list is complete.

    ``path`` is a text file of ids, one per line, or a ground-truth CSV
    (``query_id,reference_id``, read by :func:`load_ground_truth`): its query column lists
    every query, its reference column only the references that are matched (an incomplete
    list: only presence is checked). The CSV's ids come sorted.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    first = lines[0].strip().replace(" ", "") if lines else ""
    if first == ",".join(GROUND_TRUTH_HEADER):
        gt = load_ground_truth(path)
        if split == "query":
            return sorted(gt), True
        return sorted({r for r in gt.values() if r is not None}), False
    return [s.strip() for s in lines if s.strip()], True


# --- submission checks --------------------------------------------------------------------


def _examples(items: Sequence) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:_EXAMPLES])
    return f"e.g. {shown}" + (", ..." if len(items) > _EXAMPLES else "")


def _check_vectors(name: str, data: np.ndarray, stored: bool, failures: list[str]) -> int | None:
    """Shape, rows, dtype and finiteness of one split's vectors; its dims if it is 2-D."""
    if data.ndim != 2:
        failures.append(f"{name}: expected a 2-D array (n x d), got shape {data.shape}")
        return None
    if data.shape[0] == 0:
        failures.append(f"{name}: no descriptors (0 rows)")
    if stored and data.dtype != np.float32:
        failures.append(f"{name}: dtype {data.dtype}, expected float32")
    if np.issubdtype(data.dtype, np.number):
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        if len(bad):
            failures.append(
                f"{name}: {len(bad)} rows with NaN or inf values (rows {_examples(bad.tolist())})"
            )
        from fisc.search.exact import SQUARED_NORM_MAX, overflowing_rows

        huge = overflowing_rows(data)
        if len(huge):
            failures.append(
                f"{name}: {len(huge)} rows with squared norms above {SQUARED_NORM_MAX:.1e}, "
                f"where float32 distances overflow (rows {_examples(huge.tolist())}); scale "
                f"the descriptors down"
            )
    else:
        failures.append(f"{name}: dtype {data.dtype} is not numeric")
    return int(data.shape[1])


def _check_ids(
    split: str, ids: Sequence[str], disc_ids: bool, stored: bool, failures: list[str]
) -> None:
    """Format (``disc_ids``), uniqueness and (``stored``) order of one split's ids."""
    name = f"{split}_ids"
    if disc_ids:
        malformed = [i for i in ids if not is_valid_id(split, i)]
        if malformed:
            prefix, width = ID_FORMATS[split]
            failures.append(
                f"{name}: {len(malformed)} malformed {split} ids, expected {prefix} + {width} "
                f"digits ({_examples(malformed)})"
            )
    unique, counts = np.unique(np.asarray(ids, dtype=object).astype(str), return_counts=True)
    dups = unique[counts > 1].tolist()
    if dups:
        failures.append(f"{name}: {len(dups)} duplicate ids ({_examples(dups)})")
    unsorted = [i for i in range(1, len(ids)) if ids[i] < ids[i - 1]] if stored else []
    if unsorted:
        first = unsorted[0]
        failures.append(
            f"{name}: ids are not sorted ({len(unsorted)} rows out of order, first at row "
            f"{first}: {ids[first - 1]!r} before {ids[first]!r})"
        )


def submission_problems(
    vectors: Mapping[str, np.ndarray | None],
    ids: Mapping[str, Sequence[str] | None],
    max_dims: int = MAX_DIMS,
    disc_ids: bool = True,
    stored: bool = True,
) -> list[str]:
    """Every failed check of a submission's parts, one line each (empty: none failed).

    ``vectors`` and ``ids`` map ``"query"`` and ``"reference"`` to the split's descriptor
    rows and ids (``None``, or absent: not there to check). Checked: 2-D, non-empty, finite
    vectors of 1 to ``max_dims`` dims, the same for queries and references, one id per row,
    no duplicate ids; ``disc_ids``: ids in DISC21's formats; ``stored`` (the file's rules, not
    the descriptors'): float32 vectors and ids in sorted order.
    """
    failures: list[str] = []
    dims: dict[str, int | None] = {}
    for split in SPLITS:
        data, split_ids = vectors.get(split), ids.get(split)
        if data is not None:
            dims[split] = _check_vectors(split, data, stored, failures)
        if split_ids is not None:
            _check_ids(split, split_ids, disc_ids, stored, failures)
    for split in SPLITS:
        d = dims.get(split)
        if d is not None and not 1 <= d <= max_dims:
            failures.append(f"{split}: {d} dims, expected 1 to {max_dims}")
        data, split_ids = vectors.get(split), ids.get(split)
        rows = (len(data) if data.ndim >= 1 else 0) if data is not None else None
        if rows is not None and split_ids is not None and rows != len(split_ids):
            failures.append(f"{split}: {rows} rows but {len(split_ids)} ids in {split}_ids")
    if dims.get("query") is not None and dims.get("reference") is not None:
        if dims["query"] != dims["reference"]:
            failures.append(f"query has {dims['query']} dims but reference has {dims['reference']}")
    return failures


def check_submission_descriptors(
    queries: Descriptors,
    references: Descriptors,
    max_dims: int = MAX_DIMS,
    disc_ids: bool = False,
) -> None:
    """Raise ``ValueError`` listing every failed submission check (:func:`submission_problems`)
    of descriptors in memory, before any search. ``disc_ids``: ids must have the DISC21
    formats (``Q%05d``, ``R%06d``); otherwise any unique ids."""
    failures = submission_problems(
        {"query": queries.vectors, "reference": references.vectors},
        {"query": queries.ids.tolist(), "reference": references.ids.tolist()},
        max_dims,
        disc_ids=disc_ids,
        stored=False,
    )
    if failures:
        raise ValueError("descriptors fail the submission checks: " + "; ".join(failures))


def _decode_ids(name: str, raw: np.ndarray, failures: list[str]) -> list[str] | None:
    """A stored id dataset as str (``None`` unless 1-D); its encoding checked (ASCII bytes)."""
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
    return ids


def _compare(
    name: str,
    found: Sequence[str],
    expected: Sequence[str],
    failures: list[str],
    complete: bool = True,
) -> None:
    # str(): ids given as numpy strings are named like any other ('R000000', not np.str_(...))
    have, want = {str(i) for i in found}, {str(i) for i in expected}
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
    """Every failed check of the submission file at ``path``, one line each (empty: valid):
    its datasets and their encoding, then :func:`submission_problems` with DISC21's ids.

    With ``query_ids``/``reference_ids`` the file's id sets must equal them
    (``reference_ids_complete=False``: only check the listed references are present).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return [f"{path}: file does not exist"]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"{path}: not a readable HDF5 file ({e})"]
    failures: list[str] = []
    vectors: dict[str, np.ndarray] = {}
    ids: dict[str, list[str] | None] = {}
    with f:
        missing = [
            n for n in SUBMISSION_DATASETS if n not in f or not isinstance(f[n], h5py.Dataset)
        ]
        for name in missing:
            failures.append(f"missing dataset {name!r} (file has {sorted(f.keys())})")
        for split in SPLITS:
            if split not in missing:
                vectors[split] = f[split][()]
            if f"{split}_ids" not in missing:
                ids[split] = _decode_ids(f"{split}_ids", f[f"{split}_ids"][()], failures)
    failures += submission_problems(vectors, ids, max_dims, disc_ids=True, stored=True)
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


def validate_submission_main(argv: Sequence[str] | None = None) -> int:
    """The ``fisc validate-submission`` command: 0 for a valid file, 1 listing its failures."""
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
    sys.exit(validate_submission_main())
