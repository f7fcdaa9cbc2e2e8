"""Descriptor files in HDF5.

Two formats, as used by the challenge:
- per-set working files (isc2021's): datasets ``vectors`` (n x d float32) and ``image_names``;
- the submission file: ``query``, ``reference``, ``query_ids``, ``reference_ids``.
Writes go to a temporary sibling file that replaces the target only when complete
(:func:`fisc.files.atomic_path`); the rows are :class:`fisc.descriptors.Descriptors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from fisc.descriptors import Descriptors
from fisc.files import atomic_path


def ascii_ids(ids: Sequence[str]) -> np.ndarray:
    return np.array([str(i).encode("ascii") for i in ids], dtype="S")


def decode_ids(names: np.ndarray) -> np.ndarray:
    """Ids stored as ASCII bytes (or already str) as a str array."""
    return np.array([n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names])


def write_vectors(path: str | Path, descriptors: Descriptors, attrs: dict | None = None) -> None:
    """Write a per-set working file (``vectors``, ``image_names``; ``attrs`` on the file)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("vectors", data=np.asarray(descriptors.vectors, dtype=np.float32))
        f.create_dataset("image_names", data=ascii_ids(descriptors.ids))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def read_attrs(path: str | Path) -> dict:
    """The file-level attributes of an HDF5 file (strings decoded, numbers as Python)."""
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def read_vectors(path: str | Path) -> Descriptors:
    """Read a per-set working file. Image names are normalised to ids (directories and image
    extensions dropped, :func:`fisc.data.ids.normalise_name`), as other tools write them."""
    from fisc.data.ids import normalise_name

    with _open(path) as f:
        _require(f, path, ("vectors", "image_names"))
        names = np.array([normalise_name(n) for n in decode_ids(f["image_names"][:])])
        return _checked(path, "", names, f["vectors"][:])


def write_submission(
    path: str | Path, queries: Descriptors, references: Descriptors, attrs: dict | None = None
) -> None:
    """Write the single submission file, rows sorted by id, float32."""
    q, r = queries.sorted(), references.sorted()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("query", data=np.asarray(q.vectors, dtype=np.float32))
        f.create_dataset("reference", data=np.asarray(r.vectors, dtype=np.float32))
        f.create_dataset("query_ids", data=ascii_ids(q.ids))
        f.create_dataset("reference_ids", data=ascii_ids(r.ids))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def read_submission(path: str | Path) -> tuple[Descriptors, Descriptors]:
    """``(queries, references)`` from a submission file."""
    with _open(path) as f:
        _require(f, path, ("query", "reference", "query_ids", "reference_ids"))
        return (
            _checked(path, "query", decode_ids(f["query_ids"][:]), f["query"][:]),
            _checked(path, "reference", decode_ids(f["reference_ids"][:]), f["reference"][:]),
        )


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"descriptor file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e


def _checked(path, name: str, ids: np.ndarray, vectors: np.ndarray) -> Descriptors:
    """Descriptors read from ``path``, with errors that name the file and the dataset."""
    where = f"{path}{':' + name if name else ''}"
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"{where}: {len(ids)} ids for vectors of shape {vectors.shape}")
    if vectors.dtype != np.float32:
        raise ValueError(f"{where}: vectors are {vectors.dtype}, expected float32")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} non-finite vectors, e.g. ids {ids[bad][:5]}")
    return Descriptors(ids, vectors)


def _require(f: h5py.File, path, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in f]
    if missing:
        raise ValueError(f"{path}: missing HDF5 datasets {missing} (has {sorted(f.keys())})")
