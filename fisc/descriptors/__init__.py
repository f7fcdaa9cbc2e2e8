"""Descriptors: the :class:`Descriptors` type, extraction (:mod:`.extract`, :mod:`.sharded`) and
HDF5 files (:mod:`.h5io`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Descriptors:
    """Descriptors with their image ids, rows sorted by id."""

    ids: np.ndarray  # str, shape (n,)
    vectors: np.ndarray  # float32, shape (n, d)

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.ids) != len(self.vectors):
            raise ValueError(
                f"{len(self.ids)} ids for vectors of shape {tuple(self.vectors.shape)}"
            )

    def sorted(self) -> Descriptors:
        order = np.argsort(self.ids, kind="stable")
        return Descriptors(self.ids[order], self.vectors[order])
