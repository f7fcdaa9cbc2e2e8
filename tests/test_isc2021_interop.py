"""isc2021 interop for `fisc evaluate`: predictions CSV input, isc2021's recall@1/10 on the
scored list, isc2021's score normalisation (`isc_norm`) and search progress.

Expected figures are computed by hand in the comments (μAP = Σ over true positives of the
precision at that position, divided by N_gt; false positives first among equal scores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fisc.challenge import load_ground_truth
from fisc.cli import main as fisc_main
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import write_vectors
from fisc.evaluation import evaluate, evaluate_predictions, results_table
from fisc.metrics.micro_ap import load_predictions, write_predictions
from fisc.postprocess import PostProcessor, ScoreNorm, parse_spec
from fisc.search import backends, exact
from fisc.search.exact import knn
from fisc.search.torch_knn import torch_knn

# ---------------------------------------------------------------- a predictions CSV by hand

GT_CSV = "query_id,reference_id\nQ1,R1\nQ2,R2\nQ3,R3\nQ4,\nQ5,R5\n"  # N_gt = 4 (Q4: no match)
PRED_ROWS = [
    "Q9,R2,0.95",  # Q9 is not in the ground truth
    "Q1,R1,0.9",  # TP
    "Q2,R9,0.8",
    "images/query/Q2.jpg,images/reference/R2.jpg,0.7",  # TP, isc2021-style names
    "Q4,R1,0.7",  # ties with the TP above: counted before it
    "Q3,R7,0.5",
    "Q1,R5,0.4",
    "Q3,R3,0.3",  # TP, tied with the next row
    "Q3,R8,0.3",
]


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def hand_case(tmp_path):
    gt = load_ground_truth(_write(tmp_path / "gt.csv", GT_CSV))
    header = "query_id,reference_id,score\n"
    with_header = _write(tmp_path / "p.csv", header + "\n".join(PRED_ROWS) + "\n")
    without = _write(tmp_path / "p_noheader.csv", "\n".join(PRED_ROWS) + "\n")
    return gt, with_header, without


def test_predictions_hand_computed(hand_case):
    gt, path, headerless = hand_case
    q, r, s = load_predictions(path)
    assert q.tolist()[3] == "Q2" and r.tolist()[3] == "R2"  # names normalised
    assert [a.tolist() for a in load_predictions(headerless)] == [
        q.tolist(),
        r.tolist(),
        s.tolist(),
    ]

    # leaderboard: Q9 left out. Order: .9 TP, .8 FP, .7 FP (Q4), .7 TP (Q2), .5 FP, .4 FP,
    # .3 FP (Q3,R8), .3 TP (Q3,R3): TPs at 1, 4, 8 -> μAP = (1/1 + 2/4 + 3/8) / 4 = 0.46875.
    # R@P90: only the first prefix reaches P90 -> recall 1/4 at threshold 0.9.
    # isc2021 ranks (#predictions of the query scored >= its TP, minus 1): Q1 0, Q2 1,
    # Q3 2 (the tie counts against it), Q5 no prediction -> R@1 = 1/4, R@10 = 3/4.
    res = evaluate_predictions(q, r, s, gt)
    assert res.micro_ap == pytest.approx(0.46875, abs=1e-12)
    assert res.recall_at_p90 == pytest.approx(0.25) and res.threshold_at_p90 == 0.9
    assert res.isc_recall_at_1 == pytest.approx(0.25)
    assert res.isc_recall_at_10 == pytest.approx(0.75)
    assert (res.n_predictions, res.n_gt_pairs, res.n_queries, res.n_references) == (8, 4, 4, 7)
    assert res.recall_at_1 is None and res.dims is None and res.source == "predictions"

    # isc2021: Q9's prediction is a false positive at the top: TPs at 2, 5, 9 ->
    # μAP = (1/2 + 2/5 + 3/9) / 4 = 37/120; no prefix reaches P90.
    iso = evaluate_predictions(q, r, s, gt, protocol="isc2021")
    assert iso.micro_ap == pytest.approx(37 / 120, abs=1e-12)
    assert iso.recall_at_p90 == 0.0 and iso.threshold_at_p90 is None
    assert (iso.isc_recall_at_1, iso.isc_recall_at_10) == (res.isc_recall_at_1, 0.75)
    assert (iso.n_predictions, iso.n_queries) == (9, 5)
    with pytest.raises(ValueError, match="9 predictions, more than the cap of 8"):
        evaluate_predictions(q, r, s, gt, protocol="isc2021", cap=8)

    # isc2021's rank counts every prediction of the query scored at least as high: a false
    # positive tied with the true reference puts it at rank 1
    tie = evaluate_predictions(["Q1", "Q1"], ["R6", "R1"], [0.5, 0.5], {"Q1": "R1"})
    assert (tie.isc_recall_at_1, tie.isc_recall_at_10) == (0.0, 1.0)

    table = results_table({"p": res})
    assert "isc R@1 | isc R@10" in table.splitlines()[0]
    assert "| p | 0.4688 | 0.2500 | — | — | 0.2500 | 0.7500 | — | leaderboard |" in table


@pytest.mark.parametrize(
    "rows, message",
    [
        (["Q1,R1"], r":2: expected 3 fields"),
        (["Q1,R1,0.5,extra"], r":2: expected 3 fields"),
        (["Q1,R1,high"], r":2: score 'high' is not a number"),
        (["Q1,R1,nan"], r":2: score 'nan' is not finite"),
        (
            ["Q1,R1,0.5", "Q1,R2,0.4", "Q1,R1,0.3"],
            r":4: duplicate prediction \(Q1, R1\) \(first on line 2\)",
        ),
        (["Q1.jpg,R1,0.5", "Q1,R1.png,0.3"], r":3: duplicate prediction \(Q1, R1\)"),
        ([",R1,0.5"], r":2: empty query id"),
        (["Q1,R1,0.5", "Q2,,0.5"], r":3: empty reference id"),
    ],
)
def test_bad_prediction_rows_are_named(tmp_path, rows, message):
    path = _write(tmp_path / "p.csv", "query_id,reference_id,score\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=message):
        load_predictions(path)


def test_bad_predictions_header_and_disc_ids(tmp_path):
    path = _write(tmp_path / "p.csv", "query,reference,score\nQ1,R1,0.5\n")
    with pytest.raises(ValueError, match=r":1: score 'score' is not a number \(header must be"):
        load_predictions(path)
    path = _write(tmp_path / "p.csv", "Q00001,R000001,0.5\nQ1,R000001,0.4\n")
    assert load_predictions(path)[0].tolist() == ["Q00001", "Q1"]
    with pytest.raises(ValueError, match=r":2: 'Q1' is not a query id"):
        load_predictions(path, disc_ids=True)


def test_disc_ids_check_the_reference_id_and_the_hint_names_line_1_only(tmp_path):
    path = _write(tmp_path / "p.csv", "Q00001,R000001,0.5\nQ00002,R2,0.4\n")
    assert load_predictions(path)[1].tolist() == ["R000001", "R2"]
    with pytest.raises(ValueError, match=r":2: 'R2' is not a reference id"):
        load_predictions(path, disc_ids=True)
    # a bad score below line 1 is not a header problem: no hint about the header
    path = _write(tmp_path / "p.csv", "query_id,reference_id,score\nQ1,R1,high\n")
    with pytest.raises(ValueError, match=r":2: score 'high' is not a number$"):
        load_predictions(path)


def test_predictions_file_bytes_and_empty_list(tmp_path):
    # the file isc2021's script reads: its header, "\n" line ends, each score's shortest repr
    path = tmp_path / "p.csv"
    write_predictions(path, ["Q00001", "Q00002"], ["R000003", "R000004"], [0.5, 1 / 3])
    expect = "query_id,reference_id,score\nQ00001,R000003,0.5\nQ00002,R000004,0.3333333333333333\n"
    assert path.read_bytes() == expect.encode()
    # a list with no prediction reads back as three empty arrays, ids still strings
    write_predictions(path, [], [], [])
    q, r, s = load_predictions(path)
    assert (q.size, r.size, s.size) == (0, 0, 0)
    assert (q.dtype.kind, r.dtype.kind, s.dtype) == ("U", "U", np.float64)


def test_write_predictions_refuses_bad_input_and_writes_any_real_score_as_a_float(tmp_path):
    path = tmp_path / "p.csv"
    with pytest.raises(ValueError, match="query ids, reference ids and scores differ in length"):
        write_predictions(path, ["Q1", "Q2"], ["R1", "R2"], [0.5])
    with pytest.raises(ValueError, match=r"query_ids must be 1-D, got shape \(1, 1\)"):
        write_predictions(path, [["Q1"]], ["R1"], [0.5])
    with pytest.raises(ValueError, match="reference_ids must hold string ids, got dtype int64"):
        write_predictions(path, ["Q1"], np.array([1], np.int64), [0.5])
    assert not path.exists()  # nothing written
    # boolean and integer scores read back as the same float64 values
    for scores in (np.array([True, False]), np.array([3, 0], np.uint8), [2, -1]):
        write_predictions(path, ["Q1", "Q2"], ["R1", "R2"], scores)
        assert load_predictions(path)[2].tolist() == np.asarray(scores, np.float64).tolist()


def test_predictions_file_is_utf8_whatever_the_locale(tmp_path):
    # a non-ASCII id written under the C locale (no UTF-8 mode): the file is still UTF-8
    import os
    import subprocess
    import sys
    from pathlib import Path

    import fisc

    path = tmp_path / "p.csv"
    code = (
        "import sys; from fisc.metrics.micro_ap import write_predictions; "
        "write_predictions(sys.argv[1], ['Q\\u00e9'], ['R1'], [0.5])"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    root = Path(fisc.__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root)
    # cwd: the tree fisc was loaded from (under mutmut, its copy, where mutmut finds its config)
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True, cwd=root)
    assert path.read_bytes() == "query_id,reference_id,score\nQé,R1,0.5\n".encode()


# ---------------------------------------------------------------- isc2021 recalls vs search


def test_isc_recalls_come_from_the_capped_list():
    # 2-D points. A at (0, 0) with 40 references at 0.02, 0.04, ... 0.80 along x (TP: the
    # nearest); C at (0, 10) with references at x = .11, .21, .31 (TP: the third); B at
    # (100, 100), TP at distance 3 (its nearest). Leaderboard cap = 10 x 3 = 30: C's 3 pairs
    # and A's 27 nearest (all < 1), so B owns none.
    ra = [(0.02 * (j + 1), 0.0) for j in range(40)]
    rc = [(0.11, 10.0), (0.21, 10.0), (0.31, 10.0)]
    refs = np.array([*ra, *rc, (103.0, 100.0)], np.float32)
    r_ids = np.array([f"Ra{j}" for j in range(40)] + ["Rc0", "Rc1", "Rc2", "Rb"])
    q = Descriptors(np.array(["A", "B", "C"]), np.array([(0, 0), (100, 100), (0, 10)], np.float32))
    gt = {"A": "Ra0", "B": "Rb", "C": "Rc2"}
    res = evaluate(q, Descriptors(r_ids, refs), gt, backend="torch", progress=False)
    assert res.n_predictions == 30
    # capped list: A rank 0, C rank 2, B absent -> isc R@1 = 1/3, isc R@10 = 2/3;
    # per-query top 10: A rank 0, B rank 0, C rank 2 -> R@1 = 2/3, R@10 = 1
    assert res.isc_recall_at_1 == pytest.approx(1 / 3)
    assert res.isc_recall_at_10 == pytest.approx(2 / 3)
    assert res.recall_at_1 == pytest.approx(2 / 3) and res.recall_at_10 == pytest.approx(1.0)
    # pairs with d² <= .0961 (C's TP): A's 15 (0.02..0.30) and C's 3 -> TPs at 1 and 18:
    # μAP = (1 + 2/18) / 3 = 10/27; R@P90 = 1/3
    assert res.micro_ap == pytest.approx(10 / 27, abs=1e-9)
    assert res.recall_at_p90 == pytest.approx(1 / 3)
    # per_query with k = 10: the list is the per-query search, so the two pairs agree
    pq = evaluate(q, Descriptors(r_ids, refs), gt, protocol="per_query", backend="torch")
    assert (pq.isc_recall_at_1, pq.isc_recall_at_10) == (pq.recall_at_1, pq.recall_at_10)


# ---------------------------------------------------------------- descriptors == their CSV


@pytest.mark.parametrize("protocol", ["leaderboard", "isc2021"])
def test_descriptors_and_their_written_predictions_score_the_same(tmp_path, protocol):
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((80, 12)).astype(np.float32)
    queries = rng.standard_normal((30, 12)).astype(np.float32)
    queries[:15] = refs[:15] + 1.1 * rng.standard_normal((15, 12)).astype(np.float32)
    write_vectors(
        tmp_path / "r.h5", Descriptors(np.array([f"img/R{i}.jpg" for i in range(80)]), refs)
    )
    write_vectors(tmp_path / "q.h5", Descriptors(np.array([f"Q{i}" for i in range(30)]), queries))
    # 20 of the 30 queries in the ground truth, 12 of them with a match
    gt = _write(
        tmp_path / "gt.csv",
        "query_id,reference_id\n"
        + "".join(f"Q{i},{f'R{i}' if i < 12 else ''}\n" for i in range(20)),
    )
    common = ["--gt", str(gt), "--protocol", protocol]
    if protocol == "isc2021":
        common += ["--cap", "70"]  # every query searched, 70 pairs pooled (a predictions
        # file over the cap is refused; the written one has exactly 70)
    assert fisc_main(["evaluate", "--query", str(tmp_path / "q.h5"), "--reference",
                      str(tmp_path / "r.h5"), *common, "--json", str(tmp_path / "d.json"),
                      "--write-predictions", str(tmp_path / "p.csv")]) == 0  # fmt: skip
    assert fisc_main(["evaluate", "--predictions", str(tmp_path / "p.csv"), *common,
                      "--json", str(tmp_path / "p.json")]) == 0  # fmt: skip
    d = json.loads((tmp_path / "d.json").read_text())
    p = json.loads((tmp_path / "p.json").read_text())
    for key in ("micro_ap", "recall_at_p90", "threshold_at_p90", "isc_recall_at_1",
                "isc_recall_at_10", "n_predictions", "n_gt_pairs", "protocol"):  # fmt: skip
        assert d[key] == p[key], key
    assert 0.1 < d["micro_ap"] < 0.99  # neither trivial nor perfect
    assert d["n_predictions"] == (70 if protocol == "isc2021" else 200)
    assert p["source"] == "predictions" and p["recall_at_1"] is None and p["dims"] is None
    assert d["source"] == "descriptors" and d["dims"] == 12


def test_cli_predictions_refuses_descriptor_options(tmp_path, capsys):
    gt = _write(tmp_path / "gt.csv", GT_CSV)
    preds = _write(tmp_path / "p.csv", "\n".join(PRED_ROWS) + "\n")
    rc = fisc_main(["evaluate", "--predictions", str(preds), "--gt", str(gt), "--train", "t.h5"])
    assert rc == 2 and "not with --train" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.csv", "Q1,R1,0.5\nQ1,R1,0.6\n")
    assert fisc_main(["evaluate", "--predictions", str(bad), "--gt", str(gt)]) == 2
    assert "bad.csv:2: duplicate prediction (Q1, R1)" in capsys.readouterr().err
    assert fisc_main(["evaluate", "--predictions", str(preds), "--gt", str(gt)]) == 0
    assert "| p | 0.4688 |" in capsys.readouterr().out


# ---------------------------------------------------------------- isc2021 score normalisation


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def unit_data():
    rng = np.random.default_rng(5)
    train = _unit(rng.standard_normal((120, 10)))
    q = _unit(rng.standard_normal((25, 10)))
    r = _unit(rng.standard_normal((60, 10)))
    return train.astype(np.float32), q.astype(np.float32), r.astype(np.float32)


@pytest.mark.parametrize("reduction", ["min", "mean"])
def test_isc_norm_distance_is_isc2021_score(unit_data, reduction):
    train, q, r = unit_data
    n, factor = 4, 1.5
    step = parse_spec(f"isc_norm{n}:{factor}:{reduction}")[0].fit(train)
    qq = step.transform(q, role="query").astype(np.float64)
    rr = step.transform(r, role="reference").astype(np.float64)
    assert qq.shape[1] == rr.shape[1] == 11
    d2 = ((qq[:, None, :] - rr[None, :, :]) ** 2).sum(-1)
    # isc2021: inner product minus factor x the n-th largest (or mean top-n) training similarity
    top = np.sort(q.astype(np.float64) @ train.astype(np.float64).T, axis=1)[:, ::-1][:, :n]
    s_n = top[:, n - 1] if reduction == "min" else top.mean(1)
    isc_score = q.astype(np.float64) @ r.astype(np.float64).T - factor * s_n[:, None]
    np.testing.assert_allclose(-d2, 2 * isc_score - 2 - 2 * factor, atol=1e-5)


def test_isc_norm_mean_equals_score_norm_query_side(unit_data):
    train, q, r = unit_data
    a = parse_spec("isc_norm5:0.8:mean")[0].fit(train)
    b = ScoreNorm(k=5, lam=0.8, sides="q").fit(train)
    for x, role in ((q, "query"), (r, "reference")):
        assert np.array_equal(a.transform(x, role=role), b.transform(x, role=role))
    # the default reduction (the n-th similarity) is another normalisation
    c = parse_spec("isc_norm5:0.8")[0].fit(train)
    assert not np.allclose(c.transform(q, role="query"), b.transform(q, role="query"))


def test_isc_norm_pipeline_scores_like_isc2021(unit_data, tmp_path):
    # fisc: post-process (l2, isc_norm), search by L2 under isc2021's global cap. isc2021:
    # inner product minus factor x s_n over every pair, the cap highest kept. Same μAP.
    train, q, r = unit_data
    n, factor, cap = 3, 2.0, 200
    q_ids = np.array([f"Q{i}" for i in range(len(q))])
    r_ids = np.array([f"R{i}" for i in range(len(r))])
    gt = {f"Q{i}": (f"R{(7 * i) % len(r)}" if i % 3 else None) for i in range(len(q))}
    pp = PostProcessor(f"l2,isc_norm{n}:{factor}").fit(train)
    pp.save(tmp_path / "pp.npz")
    pp = PostProcessor.load(tmp_path / "pp.npz")
    fq = pp.transform(Descriptors(q_ids, q), role="query")
    fr = pp.transform(Descriptors(r_ids, r), role="reference")
    ours = evaluate(fq, fr, gt, protocol="isc2021", cap=cap, backend="torch")

    s_n = np.sort(q.astype(np.float64) @ train.astype(np.float64).T, axis=1)[:, -n]
    scores = q.astype(np.float64) @ r.astype(np.float64).T - factor * s_n[:, None]
    flat = np.argsort(-scores, axis=None, kind="stable")[:cap]
    qi, ri = np.unravel_index(flat, scores.shape)
    theirs = evaluate_predictions(q_ids[qi], r_ids[ri], scores[qi, ri], gt, protocol="isc2021")
    assert ours.micro_ap == pytest.approx(theirs.micro_ap, abs=1e-12)
    assert ours.isc_recall_at_10 == theirs.isc_recall_at_10
    assert 0 < theirs.micro_ap < 1


@pytest.mark.parametrize("text", ["isc_norm3:1:max", "isc_norm3:-1", "score_norm3:-0.5"])
def test_bad_isc_norm_specs(text):
    with pytest.raises(ValueError, match=text):
        parse_spec(text)


# ---------------------------------------------------------------- search progress


@pytest.fixture(scope="module")
def search_data():
    rng = np.random.default_rng(1)
    return (
        rng.standard_normal((57, 16)).astype(np.float32),
        rng.standard_normal((300, 16)).astype(np.float32),
    )


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_progress_bar_only_on_large_searches(search_data, backend, capfd, monkeypatch):
    q, r = search_data
    capfd.readouterr()
    quiet = knn(q, r, 5, backend=backend)  # 57 x 300 pairs: far below the threshold
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(exact, "PROGRESS_MIN_PAIRS", 57 * 300)  # now "large"
    loud = knn(q, r, 5, backend=backend, query_tile=20, ref_tile=100)
    err = capfd.readouterr().err
    assert "k-NN search (57 x 300, k=5)" in err and "17.1k/17.1k" in err
    assert knn(q, r, 5, backend=backend, progress=False) is not None
    assert capfd.readouterr().err == ""
    for a, b in zip(quiet, loud, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiles_report_progress(search_data):
    q, r = search_data
    seen = []
    torch_knn(q, r, 7, query_tile=20, ref_tile=128, on_tile=seen.append)
    assert seen == [20 * 128, 20 * 128, 20 * 44] * 2 + [17 * 128, 17 * 128, 17 * 44]
    seen.clear()
    d_f, i_f = backends.faiss_knn(q, r, 7, query_tile=20, on_tile=seen.append)
    assert seen == [20 * 300, 37 * 300]  # a last tile under 20 queries joins the one before
    d_1, i_1 = backends.faiss_knn(q, r, 7)  # one call, as before tiling: the same, bit for bit
    np.testing.assert_array_equal(i_f, i_1)
    np.testing.assert_array_equal(d_f, d_1)
    assert backends.query_tiles(8192 + 5, 4096, 20) == [(0, 4096), (4096, 8197)]
    assert backends.query_tiles(8192 + 25, 4096, 20)[-1] == (8192, 8217)
