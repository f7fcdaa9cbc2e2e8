"""Scoring descriptors, or a list of predictions, against a ground truth, under the
leaderboard protocol or its variants.

Protocols (see docs/protocol.md):
- ``leaderboard`` (default): keep ground-truth queries, pool the ``10 x n_queries`` closest
  (query, reference) pairs over all queries, score = -squared L2;
- ``isc2021``: isc2021's script: every query searched, a fixed cap (default 500,000),
  predictions for queries absent from the ground truth count as false positives;
- ``per_query``: ``k`` neighbours per ground-truth query (SSCD's default, k = 10).

:func:`evaluate_predictions` scores a ``query_id,reference_id,score`` list as given (isc2021's
``compute_metrics.py``): the protocol only says what happens to predictions for queries absent
from the ground truth (``isc2021``: false positives; otherwise left out) and, for ``isc2021``,
refuses a list longer than the cap, as isc2021's script does.

Two pairs of recalls at rank 1 and 10:
- ``recall_at_1`` / ``recall_at_10``: from a separate per-query search of the ground-truth
  queries (10 neighbours each), whatever the protocol; ``None`` for a predictions list, which
  allows no search;
- ``isc_recall_at_1`` / ``isc_recall_at_10``: isc2021's ``recall_at_rank1`` /
  ``recall_at_rank10``, computed on the scored list itself (the protocol's capped list, or the
  predictions file): a ground-truth query's rank is the number of its predictions in that list
  scored at least as high as its true reference, minus one (ties count against it); R@k is the
  share of the ground-truth queries with a match whose rank is below k, a query whose true
  reference is not in the list counting as a miss. Under a global cap a query may keep fewer
  than 10 of its neighbours, so these are at most the per-query figures; with ``per_query`` and
  k = 10 the two pairs are equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fisc.challenge import MAX_DIMS, check_submission_descriptors
from fisc.data.disc21 import check_ground_truth
from fisc.descriptors import Descriptors
from fisc.files import write_json
from fisc.metrics.micro_ap import (
    _as_str_array,
    micro_average_precision,
    recall_at_rank,
    write_predictions,
)
from fisc.search.exact import global_capped_search, per_query_search

PROTOCOLS = ("leaderboard", "isc2021", "per_query")
ISC2021_CAP = 500_000


@dataclass
class EvalResult:
    protocol: str
    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None
    recall_at_1: float | None  # per-query search; None for a predictions list
    recall_at_10: float | None
    isc_recall_at_1: float  # isc2021's, on the scored list (module docstring)
    isc_recall_at_10: float
    n_queries: int  # queries searched, or (predictions) distinct queries scored
    n_references: int  # references searched, or (predictions) distinct references scored
    n_predictions: int
    n_gt_pairs: int
    dims: int | None  # None for a predictions list
    source: str = "descriptors"  # or "predictions"

    def to_json(self, path: str | Path) -> None:
        write_json(path, asdict(self))


def _list_metrics(query_ids, reference_ids, scores, ground_truth, unknown: str) -> dict:
    """The :class:`EvalResult` fields computed on a scored list: μAP and friends, and isc2021's
    recalls at rank 1 and 10 on it."""
    metrics = micro_average_precision(
        query_ids, reference_ids, scores, ground_truth, unknown_queries=unknown
    )
    ranked = (query_ids, reference_ids, scores)
    return {
        "micro_ap": metrics.micro_ap,
        "recall_at_p90": metrics.recall_at_p90,
        "threshold_at_p90": metrics.threshold_at_p90,
        "isc_recall_at_1": recall_at_rank(ranked, ground_truth, 1),
        "isc_recall_at_10": recall_at_rank(ranked, ground_truth, 10),
        "n_predictions": metrics.n_predictions,
        "n_gt_pairs": metrics.n_gt_pairs,
    }


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
    predictions_path: str | Path | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Score query/reference descriptors; see the module docstring for the protocols.

    ``predictions_path``: also write the scored list (the protocol's search results, score =
    -squared L2) as a ``query_id,reference_id,score`` CSV, which :func:`evaluate_predictions`
    scores to the same figures. ``progress``: search progress bars (None: large searches only).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    check_submission_descriptors(queries, references, max_dims, disc_ids)
    q_ids, r_ids = queries.ids, references.ids
    missing = sorted(set(ground_truth) - set(q_ids.tolist()))
    if missing:
        raise ValueError(
            f"{len(missing)} ground-truth queries have no descriptor, e.g. {missing[:5]}"
        )
    check_ground_truth(ground_truth, q_ids, r_ids)
    in_gt = np.isin(q_ids, list(ground_truth))
    gt_q = Descriptors(q_ids[in_gt], queries.vectors[in_gt])
    search = {"backend": backend, "progress": progress}

    if protocol == "leaderboard":
        qi, ri, d2 = global_capped_search(
            gt_q.vectors, references.vectors, 10 * len(gt_q.ids), **search
        )
        searched, unknown = gt_q, "ignore"
    elif protocol == "isc2021":
        qi, ri, d2 = global_capped_search(
            queries.vectors, references.vectors, cap or ISC2021_CAP, **search
        )
        searched, unknown = queries, "false_positive"
    else:
        qi, ri, d2 = per_query_search(gt_q.vectors, references.vectors, k, **search)
        searched, unknown = gt_q, "ignore"
    listed = (searched.ids[qi], r_ids[ri], -d2.astype(np.float64))
    scored = _list_metrics(*listed, ground_truth, unknown)
    if predictions_path is not None:
        write_predictions(predictions_path, *listed)
    pq, pr, pd = per_query_search(gt_q.vectors, references.vectors, 10, **search)
    ranked = (gt_q.ids[pq], r_ids[pr], -pd.astype(np.float64))
    return EvalResult(
        protocol=protocol,
        recall_at_1=recall_at_rank(ranked, ground_truth, 1),
        recall_at_10=recall_at_rank(ranked, ground_truth, 10),
        n_queries=len(searched.ids),
        n_references=len(r_ids),
        dims=int(queries.vectors.shape[1]),
        **scored,
    )


def evaluate_predictions(
    query_ids,
    reference_ids,
    scores,
    ground_truth: Mapping[str, str | None],
    protocol: str = "leaderboard",
    cap: int | None = None,
) -> EvalResult:
    """Score a list of (query, reference, score) predictions as given, higher score = more
    confident (e.g. from :func:`fisc.metrics.micro_ap.load_predictions`).

    ``protocol``: ``isc2021`` counts predictions for queries absent from the ground truth as
    false positives and refuses more than ``cap`` (default 500,000) predictions, like isc2021's
    ``compute_metrics.py``; ``leaderboard`` and ``per_query`` leave such predictions out and
    refuse a list longer than ``cap`` only when one is given. Nothing is searched, so
    ``recall_at_1``, ``recall_at_10`` and ``dims`` are None.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    q = _as_str_array(query_ids, "query_ids")
    r = _as_str_array(reference_ids, "reference_ids")
    limit = cap if cap is not None else (ISC2021_CAP if protocol == "isc2021" else None)
    if limit is not None and q.size > limit:
        raise ValueError(f"{q.size} predictions, more than the cap of {limit}")
    unknown = "false_positive" if protocol == "isc2021" else "ignore"
    scored = _list_metrics(q, r, scores, ground_truth, unknown)
    kept = np.isin(q, list(ground_truth)) if unknown == "ignore" else np.ones(q.size, bool)
    return EvalResult(
        protocol=protocol,
        recall_at_1=None,
        recall_at_10=None,
        n_queries=int(np.unique(q[kept]).size),
        n_references=int(np.unique(r[kept]).size),
        dims=None,
        source="predictions",
        **scored,
    )


def _cell(x, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def read_inputs(
    queries: Descriptors | str | Path | None = None,
    references: Descriptors | str | Path | None = None,
    submission: str | Path | None = None,
) -> tuple[Descriptors, Descriptors, str]:
    """The descriptors ``fisc evaluate`` scores: ``(queries, references, name)`` from a
    submission file, or from query and reference descriptors (per-set ``.h5`` files, as
    ``fisc extract`` writes them, or :class:`~fisc.descriptors.Descriptors`). ``name``
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


def results_table(rows: Mapping[str, EvalResult], isc_recalls: bool = True) -> str:
    """A Markdown table, one row per system; ``isc_recalls=False`` leaves out isc2021's
    list-based recalls (the demo's table, as the README shows it)."""
    head = ["system", "μAP", "R@P90", "R@1", "R@10"]
    if isc_recalls:
        head += ["isc R@1", "isc R@10"]
    head += ["dims", "protocol"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 2) + "---|",
    ]
    for name, r in rows.items():
        cells = [name, _cell(r.micro_ap), _cell(r.recall_at_p90), _cell(r.recall_at_1),
                 _cell(r.recall_at_10)]  # fmt: skip
        if isc_recalls:
            cells += [_cell(r.isc_recall_at_1), _cell(r.isc_recall_at_10)]
        cells += [_cell(r.dims, "d"), r.protocol]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
