"""Micro-average precision (μAP) and friends, as the ISC 2021 Descriptor Track scores them.

Protocol (``docs/protocol.md``, "The score"): predictions are (query, reference,
score) triples, higher score = more confident. They are sorted by score descending, with false
positives first among equal scores (pessimistic ties); ``precision_i = TP_i / i`` and
``recall_i = TP_i / N_gt`` where ``N_gt`` counts every ground-truth pair, found or not;
``μAP = Σ_i (recall_i − recall_{i−1}) · precision_i`` (no interpolation).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fisc.challenge import check_ids_at
from fisc.data.ids import normalise_name
from fisc.files import atomic_path, read_csv_rows

UNKNOWN_QUERY_POLICIES = ("ignore", "false_positive", "error")


@dataclass(frozen=True)
class Prediction:
    query_id: str
    reference_id: str
    score: float


@dataclass(frozen=True)
class Metrics:
    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None  # score of the last item of the R@P90 prefix; None if none
    n_predictions: int  # predictions that were scored (after dropping ignored unknown queries)
    n_gt_pairs: int
    n_true_positives: int


PREDICTIONS_HEADER = ("query_id", "reference_id", "score")


def load_predictions(
    path: str | Path, disc_ids: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a predictions CSV, isc2021's ``compute_metrics.py`` input: rows
    ``query_id,reference_id,score``, higher score = more confident, header optional.

    Returns ``(query ids, reference ids, scores float64)`` in file order. Names are normalised
    like the ground truth's (:func:`fisc.data.ids.normalise_name`); ``disc_ids``: every id must
    have DISC21's format. Blank lines are skipped. Errors name the file and line: a row
    without exactly 3 fields, an empty id, a score that is not a finite number, and a
    (query, reference) pair given twice (isc2021 refuses duplicates too; fisc does not pick one
    of the two scores).
    """
    path = Path(path)
    queries: list[str] = []
    references: list[str] = []
    scores: list[float] = []
    first_line: dict[tuple[str, str], int] = {}
    for line, fields in read_csv_rows(path, PREDICTIONS_HEADER, header_optional=True):
        q, r = normalise_name(fields[0]), normalise_name(fields[1])
        if not q or not r:
            raise ValueError(f"{path}:{line}: empty {'query' if not q else 'reference'} id")
        try:
            score = float(fields[2])
        except ValueError:
            hint = " (header must be 'query_id,reference_id,score')" if line == 1 else ""
            raise ValueError(f"{path}:{line}: score {fields[2]!r} is not a number{hint}") from None
        if not np.isfinite(score):
            raise ValueError(f"{path}:{line}: score {fields[2]!r} is not finite")
        if disc_ids:
            check_ids_at(f"{path}:{line}", q, r)
        if (q, r) in first_line:
            raise ValueError(
                f"{path}:{line}: duplicate prediction ({q}, {r}) (first on line {first_line[q, r]})"
            )
        first_line[q, r] = line
        queries.append(q)
        references.append(r)
        scores.append(score)
    return (
        np.array(queries, dtype=str),
        np.array(references, dtype=str),
        np.array(scores, dtype=np.float64),
    )


def write_predictions(path: str | Path, query_ids, reference_ids, scores) -> None:
    """Write ``query_id,reference_id,score`` rows (with that header), atomically, scores in
    the shortest form that reads back as the same float64 (so a re-read list ranks and ties
    exactly as the one written)."""
    q = _as_str_array(query_ids, "query_ids")
    r = _as_str_array(reference_ids, "reference_ids")
    s = np.asarray(scores, dtype=np.float64)
    if not (q.shape == r.shape == s.shape):
        raise ValueError("query ids, reference ids and scores differ in length")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(PREDICTIONS_HEADER)
        writer.writerows(zip(q.tolist(), r.tolist(), map(repr, s.tolist()), strict=True))


def predictions_to_arrays(
    predictions: Iterable[Prediction],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    preds = list(predictions)
    q = np.array([p.query_id for p in preds], dtype=str)
    r = np.array([p.reference_id for p in preds], dtype=str)
    s = np.array([p.score for p in preds], dtype=np.float64)
    return q, r, s


def _as_str_array(ids, name: str) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype.kind == "S":
        a = np.char.decode(a, "ascii")
    elif a.dtype.kind == "O":
        a = np.array([x.decode("ascii") if isinstance(x, bytes) else str(x) for x in a], str)
    elif a.size == 0:
        a = a.astype(str)
    elif a.dtype.kind != "U":
        raise ValueError(f"{name} must hold string ids, got dtype {a.dtype}")
    return a


def _factorize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_inverse=True)`` for string ids, fast for short ASCII ids.

    Strings of at most 9 ASCII characters are packed 7 bits per character into an int64 (zero
    padded, so integer order is string order) and factorised as integers.
    """
    width = a.dtype.itemsize // 4
    if a.size and 0 < width <= 9:
        cp = np.ascontiguousarray(a).view(np.uint32).reshape(a.size, width)
        if int(cp.max()) < 128:
            key = np.zeros(a.size, np.int64)
            for c in range(width):
                key <<= 7
                key |= cp[:, c]
            _, first, codes = np.unique(key, return_index=True, return_inverse=True)
            return a[first], codes.ravel().astype(np.int64)
    uniques, codes = np.unique(a, return_inverse=True)
    return uniques, codes.ravel().astype(np.int64)


def _labelled(query_ids, reference_ids, scores, ground_truth, unknown_queries):
    """Validate; return (query codes, is_tp, scores float64, n_gt) for the scored predictions."""
    if unknown_queries not in UNKNOWN_QUERY_POLICIES:
        raise ValueError(f"unknown_queries must be one of {UNKNOWN_QUERY_POLICIES}")
    n_gt = sum(r is not None for r in ground_truth.values())
    if n_gt == 0:
        raise ValueError("ground truth has no query with a matching reference (N_gt == 0)")
    q = _as_str_array(query_ids, "query_ids")
    r = _as_str_array(reference_ids, "reference_ids")
    s = np.asarray(scores, dtype=np.float64)
    if not (q.shape == r.shape == s.shape):
        raise ValueError(
            f"length mismatch: {q.shape[0]} query ids, {r.shape[0]} reference ids, {s.shape} scores"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int(np.sum(~np.isfinite(s)))} scores are not finite")
    if q.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool), s, n_gt

    uq, q_code = _factorize(q)
    ur, r_code = _factorize(r)
    pair = q_code * len(ur) + r_code
    upair, counts = np.unique(pair, return_counts=True)
    if upair.size != pair.size:
        dup = int(upair[np.argmax(counts > 1)])
        raise ValueError(
            f"duplicate prediction ({uq[dup // len(ur)]}, {ur[dup % len(ur)]}); "
            f"{pair.size - upair.size} duplicates in all"
        )

    known_u = np.array([u in ground_truth for u in uq.tolist()], dtype=bool)
    # code (in ur) of each unique query's true reference, -1 when absent from the predictions
    gt_code_u = np.full(len(uq), -1, np.int64)
    true_refs = [ground_truth.get(u) for u in uq.tolist()]
    has_ref = np.array([t is not None for t in true_refs], dtype=bool)
    if has_ref.any():
        refs = np.array([t for t in true_refs if t is not None], dtype=str)
        pos = np.minimum(np.searchsorted(ur, refs), len(ur) - 1)
        gt_code_u[has_ref] = np.where(ur[pos] == refs, pos, -1)
    is_tp = gt_code_u[q_code] == r_code

    known = known_u[q_code]
    if not known.all():
        if unknown_queries == "error":
            bad = uq[~known_u]
            raise ValueError(
                f"{int((~known).sum())} predictions for {bad.size} queries absent "
                f"from the ground truth, e.g. {bad[0]!r}"
            )
        if unknown_queries == "ignore":
            q_code, is_tp, s = q_code[known], is_tp[known], s[known]
        # "false_positive": keep them; is_tp is already False for unknown queries
    return q_code, is_tp, s, n_gt


def _pessimistic_order(scores: np.ndarray, is_tp: np.ndarray) -> np.ndarray:
    # lexsort: last key is primary. Score descending, then false positives (0) first.
    return np.lexsort((is_tp.astype(np.int8), -scores))


def _pessimistic_curve(
    query_ids, reference_ids, scores, ground_truth, unknown_queries
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(is_tp, true positives so far, precision so far, score)`` along the predictions
    sorted pessimistically (score descending, false positives first among equal scores), and
    ``n_gt``: what μAP and the precision-recall curve are computed from."""
    _, is_tp, s, n_gt = _labelled(query_ids, reference_ids, scores, ground_truth, unknown_queries)
    order = _pessimistic_order(s, is_tp)
    tp_sorted = is_tp[order]
    tp_cum = np.cumsum(tp_sorted, dtype=np.int64)
    precision = tp_cum / np.arange(1, tp_cum.size + 1, dtype=np.float64)
    return tp_sorted, tp_cum, precision, s[order], n_gt


def precision_recall_curve(
    query_ids,
    reference_ids,
    scores,
    ground_truth: Mapping[str, str | None],
    unknown_queries: str = "ignore",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score of each prefix of the pessimistically sorted list."""
    _, tp_cum, precision, s, n_gt = _pessimistic_curve(
        query_ids, reference_ids, scores, ground_truth, unknown_queries
    )
    return precision, tp_cum / float(n_gt), s


def micro_average_precision(
    query_ids,
    reference_ids,
    scores,
    ground_truth: Mapping[str, str | None],
    unknown_queries: str = "ignore",
) -> Metrics:
    """μAP, R@P90 and counts of a list of (query, reference, score) predictions.

    ``unknown_queries``: what to do with predictions for queries absent from the ground truth:
    ``"ignore"`` (leaderboard, default), ``"false_positive"`` (isc2021's script) or ``"error"``.
    Duplicate (query, reference) pairs raise ``ValueError``; so does a ground truth without a
    single matched query.
    """
    tp_sorted, tp_cum, precision, s, n_gt = _pessimistic_curve(
        query_ids, reference_ids, scores, ground_truth, unknown_queries
    )
    n_tp = int(tp_cum[-1]) if tp_cum.size else 0
    # recall increases by 1/N_gt exactly at true positives, so the sum reduces to this
    micro_ap = float(precision[tp_sorted].sum() / n_gt)

    recall_p90, threshold = 0.0, None
    ok = np.flatnonzero(precision >= 0.9)
    if ok.size:
        best_tp = tp_cum[ok].max()
        # shortest qualifying prefix with the largest recall: it ends at a true positive
        end = int(ok[np.argmax(tp_cum[ok] == best_tp)])
        recall_p90, threshold = float(best_tp / n_gt), float(s[end])
    return Metrics(
        micro_ap=micro_ap,
        recall_at_p90=recall_p90,
        threshold_at_p90=threshold,
        n_predictions=int(s.size),
        n_gt_pairs=n_gt,
        n_true_positives=n_tp,
    )


def recall_at_rank(
    ranked: Mapping[str, Sequence[str]] | tuple,
    ground_truth: Mapping[str, str | None],
    k: int,
) -> float:
    """Fraction of matched ground-truth queries whose true reference is in their top ``k``.

    ``ranked`` is either ``{query_id: [reference ids, best first]}`` or a tuple of arrays
    ``(query_ids, reference_ids, scores)``, ranked per query by score descending with false
    positives first among equal scores. Matched queries absent from ``ranked`` count as misses.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_gt = sum(r is not None for r in ground_truth.values())
    if n_gt == 0:
        raise ValueError("ground truth has no query with a matching reference (N_gt == 0)")
    if isinstance(ranked, Mapping):
        hits = sum(
            1
            for qid, refs in ranked.items()
            if ground_truth.get(qid) is not None and ground_truth[qid] in list(refs)[:k]
        )
        return hits / n_gt
    query_ids, reference_ids, scores = ranked
    q_code, is_tp, s, _ = _labelled(query_ids, reference_ids, scores, ground_truth, "ignore")
    if s.size == 0:
        return 0.0
    order = np.lexsort((is_tp.astype(np.int8), -s, q_code))  # per query, pessimistic
    qs = q_code[order]
    starts = np.r_[0, np.flatnonzero(np.diff(qs)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, qs.size]))
    rank = np.arange(qs.size) - group_start
    return int(np.sum(is_tp[order] & (rank < k))) / n_gt
