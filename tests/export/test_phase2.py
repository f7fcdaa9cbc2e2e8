"""Phase 1 and Phase 2 export (fisc.export.phase2): the Phase 1 files written once, stamped
and checked; Phase 2 reusing them from the same artifact only; the runtimes of a run_export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fisc.challenge import validate_submission


def _export_config(tmp_path, checkpoint, root, **over):
    from fisc.export.phase2 import ExportConfig

    base = dict(
        checkpoint=str(checkpoint),
        artifact=str(tmp_path / "artifact"),
        data_root=str(root),
        phase1_queries="dev_ground_truth.csv",
        phase2_queries="phase2_ground_truth.csv",
        phase1_dir=str(tmp_path / "phase1"),
        phase2_submission=str(tmp_path / "phase2" / "submission.h5"),
        reference_check_sample=8,
        batch_size=4,
        num_workers=0,
    )
    return ExportConfig(**{**base, **over})


def test_phase2_export_reuses_frozen_phase1(tmp_path, checkpoint, tiny_minidisc):
    import h5py

    from fisc.descriptors.h5io import read_submission, read_vectors
    from fisc.export.phase2 import ExportError, export_phase1, export_phase2, run_export

    ec = _export_config(tmp_path, checkpoint, tiny_minidisc)
    summary = run_export(ec)
    assert summary["queries"] == 12 and summary["references"] == 16
    sub = Path(ec.phase2_submission)
    assert validate_submission(sub) == []
    q, r = read_submission(sub)
    assert q.ids[0] == "Q50000" and len(q.ids) == 12
    phase1_refs = read_vectors(tmp_path / "phase1" / "references.h5")
    np.testing.assert_array_equal(r.vectors, phase1_refs.vectors)  # reused, identical
    with h5py.File(sub) as f, h5py.File(tmp_path / "phase1" / "submission.h5") as g:
        assert f.attrs["artifact_hash"] == g.attrs["artifact_hash"] == summary["artifact_hash"]
    with pytest.raises(ExportError, match="already holds a submission"):
        export_phase2(ec)
    with pytest.raises(ExportError, match="never overwritten"):
        export_phase1(ec)


def test_phase2_refuses_other_model_overlap_and_missing_phase1(tmp_path, checkpoint, tiny_minidisc):
    import dataclasses

    import torch

    from fisc.export.freeze import freeze
    from fisc.export.phase2 import ExportError, export_phase2, run_export
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    ec = _export_config(tmp_path, checkpoint, tiny_minidisc)
    run_export(ec)
    # another model (other weights): its artifact hash differs from Phase 1's stamp
    torch.manual_seed(1)
    cfg = ModelConfig(name="resnet18", dims=16, eval_size=32)
    other = tmp_path / "other.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model": dataclasses.asdict(cfg)},
            "state_dict": {
                "model." + k: v for k, v in build_descriptor_model(cfg).state_dict().items()
            },
        },
        other,
    )
    freeze(other, tmp_path / "other_artifact")
    moved = str(tmp_path / "p2b.h5")
    with pytest.raises(ExportError, match="differs from Phase 1"):
        export_phase2(
            dataclasses.replace(
                ec, artifact=str(tmp_path / "other_artifact"), phase2_submission=moved
            )
        )
    with pytest.raises(ExportError, match="are Phase 1 queries"):
        export_phase2(
            dataclasses.replace(ec, phase2_queries="dev_ground_truth.csv", phase2_submission=moved)
        )
    with pytest.raises(ExportError, match="missing Phase 1"):
        export_phase2(
            dataclasses.replace(ec, phase1_dir=str(tmp_path / "nowhere"), phase2_submission=moved)
        )
    assert not Path(moved).exists()


def test_phase1_files_stamped_and_checked(tmp_path, checkpoint, tiny_minidisc):
    import dataclasses
    import hashlib
    import json

    from fisc.descriptors import Descriptors
    from fisc.descriptors.h5io import read_attrs, read_vectors, write_vectors
    from fisc.export.phase2 import ExportError, export_phase2, run_export

    ec = _export_config(tmp_path, checkpoint, tiny_minidisc)
    summary = run_export(ec)
    phase1 = tmp_path / "phase1"
    record = json.loads((phase1 / "phase1.json").read_text())
    assert sorted(record["files"]) == ["queries.h5", "references.h5", "submission.h5"]
    for name, digest in record["files"].items():
        assert hashlib.sha256((phase1 / name).read_bytes()).hexdigest() == digest
        attrs = read_attrs(phase1 / name)
        assert attrs["artifact_hash"] == summary["artifact_hash"] and attrs["fisc_phase"] == 1
    p2 = read_attrs(ec.phase2_submission)
    assert (
        p2["fisc_phase"] == 2 and p2["phase1_references_sha256"] == record["files"]["references.h5"]
    )
    assert summary["reference_max_abs_diff"] == 0.0

    # Phase 1 was written on cpu: a Phase 2 on another setup must accept a tolerance explicitly
    record["device"] = "cuda:0"
    (phase1 / "phase1.json").write_text(json.dumps(record))
    other = dataclasses.replace(ec, phase2_submission=str(tmp_path / "b.h5"))
    with pytest.raises(ExportError, match="bit-identical only on the same device"):
        export_phase2(other)
    assert export_phase2(dataclasses.replace(other, reference_tolerance=1e-6))["queries"] == 12

    # a reference descriptor changed after Phase 1, even with the right stamp, is caught
    refs = read_vectors(phase1 / "references.h5")
    vectors = refs.vectors.copy()
    vectors[0, 0] += 1e-3
    write_vectors(
        phase1 / "references.h5",
        Descriptors(refs.ids, vectors),
        attrs=read_attrs(phase1 / "references.h5"),
    )
    with pytest.raises(ExportError, match="references.h5: sha256 differs"):
        export_phase2(dataclasses.replace(ec, phase2_submission=str(tmp_path / "c.h5")))
    assert not (tmp_path / "c.h5").exists()


def test_run_export_makes_runtime_once_for_its_artifact(tmp_path, checkpoint, tiny_minidisc):
    import dataclasses

    from fisc.export.artifact import ArtifactError
    from fisc.export.phase2 import run_export

    ec = _export_config(
        tmp_path,
        checkpoint,
        tiny_minidisc,
        runtime_dir=str(tmp_path / "runtime"),
        runtime_formats=["torchscript"],
    )
    summary = run_export(ec)
    assert summary["runtime"]["torchscript"] <= 1e-5
    (tmp_path / "runtime" / "runtime.json").write_text("{}")  # altered: its manifest catches it
    with pytest.raises(ArtifactError, match="runtime.json: sha256 differs"):
        run_export(dataclasses.replace(ec, phase2_submission=str(tmp_path / "again.h5")))


def test_phase2_recheck_catches_references_that_changed_under_intact_phase1_files(
    tmp_path, checkpoint, tiny_minidisc
):
    """The sha256 check guards the Phase 1 files; the recomputation guards what they were made
    from. Reference images edited after Phase 1 (1 grey level brighter, re-encoded) leave
    every Phase 1 file, stamp and hash intact, so only the element-wise comparison of the
    recomputed reference descriptors can refuse the Phase 2 export."""
    import dataclasses
    import shutil

    import cv2

    from fisc.export.manifest import artifact_hash
    from fisc.export.phase2 import ExportError, check_phase1, export_phase2, run_export

    root = tmp_path / "data"
    shutil.copytree(tiny_minidisc, root)
    ec = _export_config(tmp_path, checkpoint, root, reference_check_sample=16)
    run_export(ec)
    for path in sorted((root / "images" / "reference").glob("*.jpg")):
        img = cv2.imread(str(path))
        cv2.imwrite(str(path), np.clip(img.astype(np.int16) + 1, 0, 255).astype(np.uint8))
    check_phase1(tmp_path / "phase1", artifact_hash(ec.artifact))  # passes: files untouched
    again = dataclasses.replace(ec, phase2_submission=str(tmp_path / "again.h5"))
    with pytest.raises(ExportError, match="recomputed reference descriptors differ from Phase 1"):
        export_phase2(again)
    assert not (tmp_path / "again.h5").exists()
