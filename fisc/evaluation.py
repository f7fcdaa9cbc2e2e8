"""Scoring descriptors against a ground truth, under the leaderboard protocol or its variants.

Protocols (see docs/protocol.md):
- ``leaderboard`` (default): keep ground-truth queries, pool the ``10 x n_queries`` closest
  (query, reference) pairs over all queries, score = -squared L2;
- ``isc2021``: isc2021's script: every query searched, a fixed cap (default 500,000),
  predictions for queries absent from the ground truth count as false positives;
- ``per_query``: ``k`` neighbours per ground-truth query (SSCD's default, k = 10).
Recall@1 and recall@10 always come from a per-query search of the ground-truth queries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fisc.data.disc21 import check_ground_truth
from fisc.data.ids import is_valid_id
from fisc.descriptors.h5io import Descriptors, atomic_path
from fisc.metrics.micro_ap import micro_average_precision, recall_at_rank
from fisc.search.exact import global_capped_search, per_query_search

PROTOCOLS = ("leaderboard", "isc2021", "per_query")
MAX_DIMS = 256


@dataclass
class EvalResult:
    protocol: str
    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None
    recall_at_1: float
    recall_at_10: float
    n_queries: int
    n_references: int
    n_predictions: int
    n_gt_pairs: int
    dims: int

    def to_json(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")


def check_submission_shape(
    queries: Descriptors,
    references: Descriptors,
    max_dims: int = MAX_DIMS,
    disc_ids: bool = False,
):
    """Errors that make descriptors unusable, raised before any search. ``disc_ids``: ids
    must have the DISC21 formats (``Q%05d``, ``R%06d``); otherwise any unique ids."""
    for name, d in (("query", queries), ("reference", references)):
        if len(d.ids) == 0:
            raise ValueError(f"{name} descriptors are empty")
        if disc_ids:
            bad = [i for i in d.ids.tolist() if not is_valid_id(name, i)]
            if bad:
                raise ValueError(f"{len(bad)} malformed {name} ids, e.g. {bad[:5]}")
        if len(set(d.ids.tolist())) != len(d.ids):
            raise ValueError(f"{name} descriptors have duplicate ids")
        if d.vectors.shape[1] > max_dims:
            raise ValueError(f"{name} descriptors have {d.vectors.shape[1]} dims > {max_dims}")
    if queries.vectors.shape[1] != references.vectors.shape[1]:
        raise ValueError(
            f"query dims {queries.vectors.shape[1]} != reference dims {references.vectors.shape[1]}"
        )


def evaluate(
    queries: Descriptors,
    references: Descriptors,
    ground_truth: Mapping[str, str | None],
    protocol: str = "leaderboard",
    k: int = 10,
    cap: int | None = None,
    backend: str = "auto",
    max_dims: int = MAX_DIMS,
    disc_ids: bool = False,
) -> EvalResult:
    """Score query/reference descriptors; see the module docstring for the protocols."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    check_submission_shape(queries, references, max_dims, disc_ids)
    q_ids, r_ids = queries.ids, references.ids
    missing = sorted(set(ground_truth) - set(q_ids.tolist()))
    if missing:
        raise ValueError(
            f"{len(missing)} ground-truth queries have no descriptor, e.g. {missing[:5]}"
        )
    check_ground_truth(ground_truth, q_ids, r_ids)
    in_gt = np.isin(q_ids, list(ground_truth))
    gt_q = Descriptors(q_ids[in_gt], queries.vectors[in_gt])

    if protocol == "leaderboard":
        qi, ri, d2 = global_capped_search(
            gt_q.vectors, references.vectors, 10 * len(gt_q.ids), backend=backend
        )
        searched, unknown = gt_q, "ignore"
    elif protocol == "isc2021":
        qi, ri, d2 = global_capped_search(
            queries.vectors, references.vectors, cap or 500_000, backend=backend
        )
        searched, unknown = queries, "false_positive"
    else:
        qi, ri, d2 = per_query_search(gt_q.vectors, references.vectors, k, backend=backend)
        searched, unknown = gt_q, "ignore"
    metrics = micro_average_precision(
        searched.ids[qi], r_ids[ri], -d2.astype(np.float64), ground_truth, unknown_queries=unknown
    )
    pq, pr, pd = per_query_search(gt_q.vectors, references.vectors, 10, backend=backend)
    ranked = (gt_q.ids[pq], r_ids[pr], -pd.astype(np.float64))
    return EvalResult(
        protocol=protocol,
        micro_ap=metrics.micro_ap,
        recall_at_p90=metrics.recall_at_p90,
        threshold_at_p90=metrics.threshold_at_p90,
        recall_at_1=recall_at_rank(ranked, ground_truth, 1),
        recall_at_10=recall_at_rank(ranked, ground_truth, 10),
        n_queries=len(searched.ids),
        n_references=len(r_ids),
        n_predictions=metrics.n_predictions,
        n_gt_pairs=metrics.n_gt_pairs,
        dims=int(queries.vectors.shape[1]),
    )


def read_inputs(
    queries: Descriptors | str | Path | None = None,
    references: Descriptors | str | Path | None = None,
    submission: str | Path | None = None,
) -> tuple[Descriptors, Descriptors, str]:
    """The descriptors ``fisc evaluate`` scores: ``(queries, references, name)`` from a
    submission file, or from query and reference descriptors (per-set ``.h5`` files, as
    ``fisc extract`` writes them, or :class:`~fisc.descriptors.h5io.Descriptors`). ``name``
    (the file's stem) labels the results."""
    from fisc.descriptors.h5io import read_submission, read_vectors

    if submission is not None:
        if queries is not None or references is not None:
            raise ValueError(
                "give either a submission file or query and reference descriptors, not both"
            )
        return (*read_submission(submission), Path(submission).stem)
    if queries is None or references is None:
        raise ValueError(
            "give a submission file, or both query descriptors and reference descriptors"
        )

    def read(d):
        return d if isinstance(d, Descriptors) else read_vectors(d)

    name = "queries" if isinstance(queries, Descriptors) else Path(queries).stem
    return read(queries), read(references), name


def results_table(rows: Mapping[str, EvalResult]) -> str:
    """A Markdown table, one row per system."""
    lines = [
        "| system | μAP | R@P90 | R@1 | R@10 | dims | protocol |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r.micro_ap:.4f} | {r.recall_at_p90:.4f} | {r.recall_at_1:.4f} | "
            f"{r.recall_at_10:.4f} | {r.dims} | {r.protocol} |"
        )
    return "\n".join(lines)
