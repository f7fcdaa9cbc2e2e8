import numpy as np
import pytest

from fisc.challenge import load_ground_truth
from fisc.data.ids import format_id
from fisc.metrics.micro_ap import (
    Prediction,
    micro_average_precision,
    precision_recall_curve,
    predictions_to_arrays,
    recall_at_rank,
)
from fisc.search.exact import global_capped_search

Q = [format_id("query", i) for i in range(30)]
R = [format_id("reference", i) for i in range(30)]


def score(preds, gt, **kw):
    q, r, s = predictions_to_arrays(Prediction(*p) for p in preds)
    return micro_average_precision(q, r, s, gt, **kw)


# ---------------------------------------------------------------- hand-computed cases


def test_basic_with_unretrieved_pair_and_unmatched_query():
    # N_gt = 3 (Q0, Q1, Q3 have a match; Q2 has none). Q3's true pair is never retrieved.
    gt = {Q[0]: R[0], Q[1]: R[1], Q[2]: None, Q[3]: R[3]}
    preds = [(Q[3], R[7], 0.6), (Q[1], R[1], 0.7), (Q[0], R[0], 0.9), (Q[2], R[5], 0.8)]
    # sorted: TP(.9) FP(.8) TP(.7) FP(.6); precision 1, 1/2, 2/3, 2/4
    # μAP = (1 · 1 + 1 · 2/3) / 3 = 5/9
    m = score(preds, gt)
    assert m.micro_ap == pytest.approx(5 / 9, abs=1e-12)
    assert (m.n_predictions, m.n_gt_pairs, m.n_true_positives) == (4, 3, 2)
    # only the prefix of length 1 has precision >= 0.9: R@P90 = 1/3 at threshold 0.9
    assert m.recall_at_p90 == pytest.approx(1 / 3)
    assert m.threshold_at_p90 == 0.9
    # had Q3's pair been found last, μAP would rise: (1 + 2/3 + 3/5) / 3
    m2 = score(preds + [(Q[3], R[3], 0.1)], gt)
    assert m2.micro_ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m2.micro_ap > m.micro_ap


def test_precision_recall_curve():
    gt = {Q[0]: R[0], Q[1]: R[1], Q[2]: None, Q[3]: R[3]}
    q, r, s = predictions_to_arrays(
        Prediction(*p)
        for p in [(Q[3], R[7], 0.6), (Q[1], R[1], 0.7), (Q[0], R[0], 0.9), (Q[2], R[5], 0.8)]
    )
    p, rec, thr = precision_recall_curve(q, r, s, gt)
    np.testing.assert_allclose(p, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.7, 0.6])


def test_ties_count_false_positives_first():
    # N_gt = 1. TP and FP share score 0.5: FP ranks first, precision at the TP = 1/2.
    gt = {Q[0]: R[0], Q[1]: None}
    for preds in ([(Q[0], R[0], 0.5), (Q[1], R[1], 0.5)], [(Q[1], R[1], 0.5), (Q[0], R[0], 0.5)]):
        m = score(preds, gt)
        assert m.micro_ap == pytest.approx(0.5)
        # prefixes: 0/1, 1/2 -> none reaches 0.9 -> R@P90 = 0, no threshold
        assert m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None
    # a strictly higher TP score gives 1.0
    assert score([(Q[0], R[0], 0.51), (Q[1], R[1], 0.5)], gt).micro_ap == pytest.approx(1.0)


def test_tie_among_true_positives_and_false_positive():
    # N_gt = 2; scores: TP .9, {TP .5, FP .5}. Order: TP, FP, TP -> precision 1, -, 2/3
    # μAP = (1 + 2/3) / 2
    gt = {Q[0]: R[0], Q[1]: R[1], Q[2]: None}
    m = score([(Q[1], R[1], 0.5), (Q[0], R[0], 0.9), (Q[2], R[2], 0.5)], gt)
    assert m.micro_ap == pytest.approx((1 + 2 / 3) / 2)


def test_unknown_queries_policies():
    # Q9 is not in the ground truth. N_gt = 1.
    gt = {Q[0]: R[0], Q[1]: None}
    preds = [(Q[9], R[9], 0.9), (Q[0], R[0], 0.8)]
    m = score(preds, gt)  # default "ignore": only the TP remains -> 1.0
    assert m.micro_ap == pytest.approx(1.0) and m.n_predictions == 1
    m = score(preds, gt, unknown_queries="false_positive")  # FP then TP -> 1/2
    assert m.micro_ap == pytest.approx(0.5) and m.n_predictions == 2
    # a prediction Q9 -> R0 must not count as TP even though R0 is someone's match
    m = score([(Q[9], R[0], 0.9), (Q[0], R[0], 0.8)], gt, unknown_queries="false_positive")
    assert m.micro_ap == pytest.approx(0.5) and m.n_true_positives == 1
    with pytest.raises(ValueError, match="absent from the ground truth"):
        score(preds, gt, unknown_queries="error")
    with pytest.raises(ValueError, match="unknown_queries"):
        score(preds, gt, unknown_queries="nope")


def test_recall_at_p90():
    # N_gt = 20; sequence 9 TP, FP, TP, 5 FP, TP (scores 17, 16, ..., 1)
    # prefix precisions: 1 (x9), 9/10 = 0.9, 10/11, 10/12 ... 10/16, 11/17
    # best qualifying recall 10/20 at prefix 11 (score 7); μAP = (9 + 10/11 + 11/17) / 20
    gt = {Q[i]: R[i] for i in range(20)} | {Q[i]: None for i in range(20, 30)}
    labels = [1] * 9 + [0] + [1] + [0] * 5 + [1]
    preds, tp_i, fp_i = [], 0, 20
    for j, lab in enumerate(labels):
        if lab:
            preds.append((Q[tp_i], R[tp_i], 17.0 - j))
            tp_i += 1
        else:
            preds.append((Q[fp_i], R[0], 17.0 - j))
            fp_i += 1
    m = score(preds, gt)
    assert m.recall_at_p90 == pytest.approx(0.5) and m.threshold_at_p90 == 7.0
    assert m.micro_ap == pytest.approx((9 + 10 / 11 + 11 / 17) / 20)


def test_recall_at_p90_exactly_point_nine():
    # N_gt = 9; FP then 9 TP: precisions 0, 1/2, ..., 9/10 = 0.9 (>= 0.9 counts)
    gt = {Q[i]: R[i] for i in range(9)} | {Q[9]: None}
    preds = [(Q[9], R[5], 10.0)] + [(Q[i], R[i], 9.0 - i) for i in range(9)]
    m = score(preds, gt)
    assert m.recall_at_p90 == pytest.approx(1.0) and m.threshold_at_p90 == 1.0
    # and with two leading FPs the best is 9/11 < 0.9 ... no prefix qualifies
    preds2 = [(Q[9], R[6], 11.0)] + preds
    m2 = score(preds2, gt)
    assert m2.recall_at_p90 == 0.0 and m2.threshold_at_p90 is None


def test_empty_and_degenerate():
    gt = {Q[0]: R[0]}
    m = micro_average_precision([], [], [], gt)
    assert m.micro_ap == 0.0 and m.recall_at_p90 == 0.0 and m.n_predictions == 0
    with pytest.raises(ValueError, match="N_gt == 0"):
        micro_average_precision([Q[0]], [R[0]], [1.0], {Q[0]: None})
    with pytest.raises(ValueError, match="duplicate prediction"):
        micro_average_precision([Q[0], Q[0]], [R[0], R[0]], [1.0, 0.5], gt)
    with pytest.raises(ValueError, match="length mismatch"):
        micro_average_precision([Q[0]], [R[0], R[1]], [1.0, 0.5], gt)
    with pytest.raises(ValueError, match="not finite"):
        micro_average_precision([Q[0]], [R[0]], [np.nan], gt)


def test_bytes_ids_accepted():
    gt = {Q[0]: R[0], Q[1]: None}
    q = np.array([Q[1], Q[0]], dtype="S6")
    r = np.array([R[1], R[0]], dtype="S7")
    assert micro_average_precision(q, r, [0.9, 0.8], gt).micro_ap == pytest.approx(0.5)


def test_object_id_arrays_mixing_bytes_and_str():
    # ids as an object array (h5py's variable-length strings), bytes and str mixed
    gt = {Q[0]: R[0], Q[1]: None}
    q = np.array([Q[1].encode(), Q[0]], dtype=object)
    r = np.array([R[1], R[0].encode()], dtype=object)
    assert micro_average_precision(q, r, [0.9, 0.8], gt).micro_ap == pytest.approx(0.5)


def test_no_prediction_and_a_single_prediction():
    gt = {Q[0]: R[0], Q[1]: R[1]}
    m = micro_average_precision([], [], [], gt)
    assert (m.n_true_positives, m.n_gt_pairs, m.threshold_at_p90) == (0, 2, None)
    assert recall_at_rank(([], [], []), gt, 1) == 0.0
    # one prediction, Q0's true pair: found at rank 1 -> 1 of the 2 matched queries
    assert recall_at_rank(([Q[0]], [R[0]], [0.5]), gt, 1) == pytest.approx(1 / 2)
    assert recall_at_rank(([Q[0]], [R[1]], [0.5]), gt, 1) == 0.0


@pytest.mark.parametrize(
    "ids",
    [
        ["A00000000", "B00000000", "C00000000"],  # 9 characters: the packed int64 path
        ["A000000000", "B000000000", "C000000000"],  # 10: too long to pack
        ["A", "A\x80", "C"],  # not ASCII: "A\x80" packed 7 bits a character would be "A"
    ],
)
def test_ids_that_differ_in_one_character_stay_distinct(ids):
    # three queries (and references named alike); only the first query is matched, to the
    # second reference, and predicted twice: as a true and as a false positive
    gt = {ids[0]: ids[1], ids[1]: None, ids[2]: None}
    q = [ids[0], ids[0], ids[1], ids[2]]
    r = [ids[1], ids[0], ids[1], ids[1]]
    m = micro_average_precision(q, r, [0.5, 0.9, 0.8, 0.7], gt)
    # sorted: FP (.9) FP (.8) FP (.7) TP (.5) -> μAP = 1/4
    assert m.micro_ap == pytest.approx(1 / 4) and m.n_true_positives == 1
    assert m.n_predictions == 4


def test_true_reference_never_predicted_and_error_messages_name_the_ids():
    # Q0's true reference R9 is absent from the predictions: no prediction of Q0 is a true
    # positive, whatever reference it names (R1 here is the second reference in id order)
    gt = {Q[0]: R[9], Q[1]: R[0]}
    m = score([(Q[0], R[1], 0.9), (Q[1], R[0], 0.5)], gt)
    assert m.n_true_positives == 1 and m.micro_ap == pytest.approx(1 / 2 / 2)
    # the duplicated pair and the unknown query are the ones named
    with pytest.raises(ValueError, match=rf"duplicate prediction \({Q[1]}, {R[2]}\); 1 dup"):
        micro_average_precision([Q[0], Q[1], Q[1]], [R[0], R[2], R[2]], [0.1, 0.2, 0.3], gt)
    with pytest.raises(ValueError, match=rf"1 predictions for 1 queries .* e\.g\. .*'{Q[7]}'"):
        score([(Q[7], R[0], 0.9), (Q[0], R[1], 0.8)], gt, unknown_queries="error")


def test_recall_at_rank():
    gt = {Q[0]: R[0], Q[1]: R[1], Q[2]: R[2], Q[3]: None}
    ranked = {Q[0]: [R[0], R[5]], Q[1]: [R[5], R[1]], Q[3]: [R[3]]}  # Q2 missing: a miss
    assert recall_at_rank(ranked, gt, 1) == pytest.approx(1 / 3)
    assert recall_at_rank(ranked, gt, 10) == pytest.approx(2 / 3)
    q = [Q[0], Q[0], Q[1], Q[1], Q[3]]
    r = [R[5], R[0], R[1], R[5], R[3]]
    s = [0.2, 0.9, 0.4, 0.4, 1.0]  # Q1: TP ties with FP -> FP first (pessimistic)
    assert recall_at_rank((q, r, s), gt, 1) == pytest.approx(1 / 3)
    assert recall_at_rank((q, r, s), gt, 2) == pytest.approx(2 / 3)


def test_load_ground_truth(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("query_id,reference_id\nQ00000,R000010\nQ00001,\n\n")
    assert load_ground_truth(p) == {"Q00000": "R000010", "Q00001": None}
    p.write_text("Q00000,R000010\n")
    with pytest.raises(ValueError, match=r"gt\.csv:1: expected header"):
        load_ground_truth(p)
    p.write_text("query_id,reference_id\nQ00000,R000010\nQ00000,\n")
    with pytest.raises(ValueError, match=r"gt\.csv:3: duplicate query id 'Q00000'.*line 2"):
        load_ground_truth(p)
    p.write_text("query_id,reference_id\nQ0000,R000010\n")
    with pytest.raises(ValueError, match=r"gt\.csv:2: .*not a query id"):
        load_ground_truth(p, disc_ids=True)
    p.write_text("query_id,reference_id\nQ00000,R00001\n")
    with pytest.raises(ValueError, match=r"gt\.csv:2: .*not a reference id"):
        load_ground_truth(p, disc_ids=True)
    # any id scheme unless DISC21's is asked for; names normalised as descriptor files write them
    p.write_text("query_id,reference_id\nqueries/query_00000.jpg,ref_10.PNG\nquery_00001,\n")
    assert load_ground_truth(p) == {"query_00000": "ref_10", "query_00001": None}
    p.write_text("query_id,reference_id\nQ00000,R000001,x\n")
    with pytest.raises(ValueError, match=r"gt\.csv:2: expected 2 fields"):
        load_ground_truth(p)


def test_leaderboard_sized_input():
    rng = np.random.default_rng(0)
    n_q, n = 50_000, 500_000
    gt = {
        format_id("query", i): (format_id("reference", i) if i % 5 == 0 else None)
        for i in range(n_q)
    }
    qi = np.repeat(np.arange(n_q), 10)
    # true pair first, then 9 distinct false ones per query (reference ids >= 50000)
    ri = np.where(
        np.arange(n) % 10 == 0, qi, 50_000 + (qi * 7919 + np.arange(n) % 10 * 104729) % 950_000
    )
    q = np.char.add("Q", np.char.zfill(qi.astype(str), 5))
    r = np.char.add("R", np.char.zfill(ri.astype(str), 6))
    s = rng.standard_normal(n)
    m = micro_average_precision(q, r, s, gt)
    assert m.n_predictions == n and m.n_true_positives == 10_000
    # every true pair scored above every false one: the ranking is perfect, μAP = R@P90 = 1
    is_tp = (np.arange(n) % 10 == 0) & (qi % 5 == 0)
    perfect = micro_average_precision(q, r, np.where(is_tp, 10 + s, s), gt)
    assert perfect.micro_ap == pytest.approx(1.0) and perfect.recall_at_p90 == 1.0


# ------------------------------------------------ independent end-to-end expectation


def _brute_micro_ap(q, r, cap, gt_idx, n_gt):
    """Plain float64 brute force: all pairs, global cap, pessimistic sort, Python loop."""
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    dist = np.empty((len(q64), len(r64)))
    for i in range(len(q64)):
        diff = r64 - q64[i]
        dist[i] = (diff * diff).sum(axis=1)
    pairs = sorted((float(dist[i, j]), i, j) for i in range(len(q64)) for j in range(len(r64)))
    kept = pairs[:cap]
    labelled = sorted(((d, gt_idx.get(i) == j) for d, i, j in kept), key=lambda x: (x[0], x[1]))
    ap, tp = 0.0, 0
    for rank, (_, is_tp) in enumerate(labelled, start=1):
        if is_tp:
            tp += 1
            ap += (1.0 / n_gt) * (tp / rank)
    return ap, [(i, j) for _, i, j in kept]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_end_to_end_matches_brute_force(backend):
    rng = np.random.default_rng(42)
    n_q, n_r, d = 200, 500, 16
    r = rng.standard_normal((n_r, d)).astype(np.float32)
    q = rng.standard_normal((n_q, d)).astype(np.float32)
    src = rng.permutation(n_r)[:80]
    noise = rng.uniform(0.2, 1.6, size=(80, 1))  # some copies far enough to be missed
    q[:80] = r[src] + noise * rng.standard_normal((80, d)).astype(np.float32)
    gt_idx = {i: int(src[i]) for i in range(80)}
    gt = {
        format_id("query", i): (format_id("reference", gt_idx[i]) if i in gt_idx else None)
        for i in range(n_q)
    }
    cap = 10 * n_q
    expected, expected_pairs = _brute_micro_ap(q, r, cap, gt_idx, n_gt=80)

    qi, ri, dist = global_capped_search(q, r, cap, backend=backend)
    assert list(zip(qi.tolist(), ri.tolist(), strict=True)) == expected_pairs
    qids = np.array([format_id("query", i) for i in range(n_q)])[qi]
    rids = np.array([format_id("reference", j) for j in range(n_r)])[ri]
    m = micro_average_precision(qids, rids, -dist.astype(np.float64), gt)
    assert abs(m.micro_ap - expected) <= 1e-6
    assert 0.05 < m.micro_ap < 0.999  # non-trivial: some matches missed or outranked


# ------------------------------------------- contracts the mutation run found unpinned


def test_bad_id_arrays_are_named_in_the_error():
    gt = {Q[0]: R[0]}
    with pytest.raises(ValueError, match=r"query_ids must be 1-D, got shape \(1, 2\)"):
        micro_average_precision([[Q[0], Q[1]]], [R[0], R[1]], [0.5, 0.4], gt)
    with pytest.raises(ValueError, match=r"reference_ids must be 1-D, got shape \(2, 1\)"):
        micro_average_precision([Q[0], Q[1]], [[R[0]], [R[1]]], [0.5, 0.4], gt)
    with pytest.raises(ValueError, match="query_ids must hold string ids, got dtype int64"):
        micro_average_precision(np.array([0, 1], np.int64), [R[0], R[1]], [0.5, 0.4], gt)
    with pytest.raises(ValueError, match="reference_ids must hold string ids, got dtype float64"):
        micro_average_precision([Q[0], Q[1]], [0.0, 1.0], [0.5, 0.4], gt)


def test_bytes_ids_must_be_ascii():
    # fisc writes ids as ASCII bytes (fisc.descriptors.h5io.ascii_ids): other bytes are
    # refused, not decoded with a guessed codec
    gt = {"Qé": R[0]}
    utf8 = np.array(["Qé".encode()], dtype="S")
    with pytest.raises(UnicodeDecodeError, match="ascii"):
        micro_average_precision(utf8, [R[0]], [0.5], gt)
    with pytest.raises(UnicodeDecodeError, match="ascii"):
        micro_average_precision(utf8.astype(object), [R[0]], [0.5], gt)


def test_integer_scores_rank_by_value():
    # unsigned scores (e.g. vote counts): the FP scored 0 ranks below the TP scored 1, and the
    # curve's scores come back as float64 (negating a uint8 0/1 array would wrap to 0/255)
    gt = {Q[0]: R[0], Q[1]: None}
    s = np.array([1, 0], np.uint8)
    m = micro_average_precision([Q[0], Q[1]], [R[0], R[1]], s, gt)
    assert m.micro_ap == 1.0 and m.threshold_at_p90 == 1.0
    p, rec, thr = precision_recall_curve([Q[0], Q[1]], [R[0], R[1]], s, gt)
    assert thr.dtype == np.float64 and thr.tolist() == [1.0, 0.0]
    np.testing.assert_allclose(p, [1, 1 / 2])
    assert recall_at_rank(([Q[0], Q[0]], [R[1], R[0]], s[::-1]), gt, 1) == 1.0  # R0 first


def test_predictions_to_arrays_types():
    q, r, s = predictions_to_arrays([])
    assert (q.dtype.kind, r.dtype.kind, s.dtype, q.size) == ("U", "U", np.float64, 0)
    # float32 and int scores (a score is any real number) come back as float64
    q, r, s = predictions_to_arrays([Prediction(Q[0], R[0], np.float32(0.5))])
    assert s.dtype == np.float64 and s.tolist() == [0.5] and q.tolist() == [Q[0]]
    assert predictions_to_arrays([Prediction(Q[0], R[1], 3)])[2].dtype == np.float64


def test_errors_count_what_is_wrong():
    gt = {Q[0]: R[0]}
    with pytest.raises(ValueError, match="^2 scores are not finite"):
        micro_average_precision([Q[0], Q[1], Q[2]], [R[0]] * 3, [np.nan, 1.0, np.inf], gt)
    # Q7 (absent from the ground truth) predicted twice, Q0 once
    preds = [(Q[7], R[0], 0.9), (Q[7], R[1], 0.8), (Q[0], R[1], 0.7)]
    with pytest.raises(ValueError, match="^2 predictions for 1 queries absent"):
        score(preds, gt, unknown_queries="error")


def test_recall_at_rank_refuses_bad_k_and_unmatched_ground_truth():
    ranked = {Q[0]: [R[0]]}
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        recall_at_rank(ranked, {Q[0]: R[0]}, 0)
    with pytest.raises(
        ValueError, match=r"ground truth has no query with a matching reference \(N_gt == 0\)"
    ):
        recall_at_rank(ranked, {Q[0]: None}, 1)
