"""`fisc evaluate --train T --postprocess SPEC ...`: one table row per spec, fitted on T."""

from __future__ import annotations

import json

import numpy as np

from fisc.cli import main as fisc_main
from fisc.descriptors.h5io import Descriptors, write_vectors


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
