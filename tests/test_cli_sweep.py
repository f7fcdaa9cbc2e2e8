"""`fisc evaluate --train T --postprocess SPEC ...`: one table row per spec, fitted on T."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fisc.cli import main as fisc_main
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import write_vectors


def test_evaluate_sweeps_postprocessing_specs(tmp_path):
    rng = np.random.default_rng(0)
    shared = rng.normal(size=16)  # a direction every descriptor shares: centering removes it
    refs = rng.normal(size=(60, 16)) + 3 * shared
    queries = refs[:20] + 0.3 * rng.normal(size=(20, 16))
    train = rng.normal(size=(200, 16)) + 3 * shared
    write_vectors(
        tmp_path / "t.h5",
        Descriptors(np.array([f"T{i:06d}" for i in range(200)]), train.astype(np.float32)),
    )
    write_vectors(
        tmp_path / "r.h5",
        Descriptors(np.array([f"R{i:06d}" for i in range(60)]), refs.astype(np.float32)),
    )
    write_vectors(
        tmp_path / "q.h5",
        Descriptors(np.array([f"Q{i:05d}" for i in range(20)]), queries.astype(np.float32)),
    )
    gt = tmp_path / "gt.csv"
    gt.write_text(
        "query_id,reference_id\n"
        + "".join(f"Q{i:05d},{f'R{i:06d}' if i < 10 else ''}\n" for i in range(20))
    )
    args = [
        "evaluate",
        "--query",
        str(tmp_path / "q.h5"),
        "--reference",
        str(tmp_path / "r.h5"),
        "--gt",
        str(gt),
        "--train",
        str(tmp_path / "t.h5"),
        "--postprocess",
        "l2",
        "--postprocess",
        "center,l2",
        "--json",
        str(tmp_path / "sweep.json"),
    ]
    assert fisc_main(args) == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["spec"] for r in rows] == ["l2", "center,l2"]
    assert rows[1]["micro_ap"] >= rows[0]["micro_ap"]
    no_train = [a for a in args if a not in ("--train", str(tmp_path / "t.h5"))]
    assert fisc_main([*no_train[:-1], str(tmp_path / "other.json")]) == 2


def test_evaluate_sweep_fits_on_the_train_file(tmp_path):
    """`--train T`: the specs are fitted on T, not on the references. References and queries
    vary mostly in dims 0-7, T only in dims 8-15, so ``pca8`` fitted on T keeps dims 8-15 (any
    orthonormal basis of them gives the same distances: the expectation is those columns,
    centred by T's mean), where the matches are lost."""
    from fisc.evaluation import evaluate

    rng = np.random.default_rng(5)
    scale = np.r_[np.ones(8), np.full(8, 0.3)]
    refs = (rng.standard_normal((150, 16)) * scale).astype(np.float32)
    queries = (rng.standard_normal((60, 16)) * scale).astype(np.float32)
    queries[:40] = refs[:40] + 0.3 * rng.standard_normal((40, 16))  # edited copies
    train = np.zeros((300, 16), np.float32)
    train[:, 8:] = 3.0 * rng.standard_normal((300, 8)) + 1.0
    q_ids = np.array([f"Q{i:05d}" for i in range(60)])
    r_ids = np.array([f"R{i:06d}" for i in range(150)])
    for name, ids, x in (("q", q_ids, queries), ("r", r_ids, refs), ("t", None, train)):
        ids = ids if ids is not None else np.array([f"T{i:06d}" for i in range(len(x))])
        write_vectors(tmp_path / f"{name}.h5", Descriptors(ids, x))
    gt = {q: (r_ids[i] if i < 40 else None) for i, q in enumerate(q_ids)}
    (tmp_path / "gt.csv").write_text(
        "query_id,reference_id\n" + "".join(f"{q},{r or ''}\n" for q, r in gt.items())
    )

    def projected(dims, mean):
        q, r = Descriptors(q_ids, queries[:, dims] - mean), Descriptors(r_ids, refs[:, dims] - mean)
        return evaluate(q, r, gt, backend="torch").micro_ap

    on_train = projected(slice(8, 16), train[:, 8:].mean(0))
    assert projected(slice(0, 8), refs[:, :8].mean(0)) > on_train + 0.5  # fits told apart
    args = ["evaluate", "--query", str(tmp_path / "q.h5"), "--reference", str(tmp_path / "r.h5")]
    args += ["--gt", str(tmp_path / "gt.csv"), "--train", str(tmp_path / "t.h5")]
    args += ["--postprocess", "pca8", "--backend", "torch", "--json", str(tmp_path / "s.json")]
    assert fisc_main(args) == 0
    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["dims"] == 8 and row["micro_ap"] == pytest.approx(on_train, abs=1e-6)
