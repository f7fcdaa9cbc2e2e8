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
    stale = tmp_path / ".phase1.partial"  # left by a killed Phase 1 export: cleared
    stale.mkdir()
    (stale / "references.h5").write_bytes(b"half written")
    summary = run_export(ec)
    assert summary["queries"] == 12 and summary["references"] == 16
    assert not stale.exists() and len(list((tmp_path / "phase1").iterdir())) == 4
    sub = Path(ec.phase2_submission)
    assert validate_submission(sub) == []
    q, r = read_submission(sub)
    assert q.ids[0] == "Q50000" and len(q.ids) == 12
    phase1_refs = read_vectors(tmp_path / "phase1" / "references.h5")
    np.testing.assert_array_equal(r.vectors, phase1_refs.vectors)  # reused, identical
    with h5py.File(sub) as f, h5py.File(tmp_path / "phase1" / "submission.h5") as g:
        assert f.attrs["artifact_hash"] == g.attrs["artifact_hash"] == summary["artifact_hash"]
    with pytest.raises(ExportError) as info:
        export_phase2(ec)
    assert str(info.value) == f"{sub} already holds a submission; move it away first"
    with pytest.raises(ExportError) as info:
        export_phase1(ec)
    assert str(info.value) == f"{ec.phase1_dir} exists: Phase 1 outputs are never overwritten"


def test_phase2_refuses_other_model_overlap_and_missing_phase1(tmp_path, checkpoint, tiny_minidisc):
    import dataclasses
    import shutil

    import torch

    from fisc.export.freeze import freeze
    from fisc.export.phase2 import ExportError, export_phase2, run_export
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    ec = _export_config(tmp_path, checkpoint, tiny_minidisc)
    run_export(ec)
    # another model (other weights): its artifact hash differs from Phase 1's stamp
    torch.manual_seed(1)
    cfg = ModelConfig(name="test_resnet", dims=16, eval_size=32)
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
    # no Phase 1, or half of one: said before the artifact is even looked at
    halves = {"json": "phase1.json", "refs": "references.h5"}
    for name, kept in halves.items():
        (tmp_path / name).mkdir()
        shutil.copy(Path(ec.phase1_dir) / kept, tmp_path / name)
    for phase1 in (tmp_path / "nowhere", tmp_path / "json", tmp_path / "refs"):
        no_artifact = str(tmp_path / "no_artifact")
        with pytest.raises(ExportError) as info:
            export_phase2(
                dataclasses.replace(
                    ec, phase1_dir=str(phase1), phase2_submission=moved, artifact=no_artifact
                )
            )
        assert str(info.value) == (
            f"missing Phase 1 reference descriptors in {phase1} (export Phase 1 first)"
        )
    assert not Path(moved).exists()


def test_phase1_files_stamped_and_checked(tmp_path, checkpoint, tiny_minidisc):
    import dataclasses
    import hashlib
    import json

    import torch

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
    with pytest.raises(ExportError) as info:
        export_phase2(other)
    assert str(info.value) == (
        f"Phase 1 ran on cuda:0 with torch {torch.__version__}, this export on cpu with torch "
        f"{torch.__version__}: descriptors are bit-identical only on the same device and "
        "software. Export on the Phase 1 setup, or set reference_tolerance to accept rounding "
        "differences."
    )
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


def test_run_export_makes_runtime_once_for_its_artifact(
    tmp_path, checkpoint, tiny_minidisc, exported
):
    import dataclasses

    from fisc.export.artifact import ArtifactError
    from fisc.export.manifest import artifact_hash
    from fisc.export.phase2 import run_export
    from fisc.export.runtime import RuntimeExportError, read_runtime_card

    runtime = tmp_path / "runtime"
    ec = _export_config(
        tmp_path,
        checkpoint,
        tiny_minidisc,
        runtime_dir=str(runtime),
        runtime_formats=["torchscript"],
        dynamic_resolution=True,
    )
    summary = run_export(ec)
    assert summary["runtime"].keys() == {"dir", "torchscript"}  # the formats asked for only
    assert summary["runtime"]["dir"] == str(runtime) and summary["runtime"]["torchscript"] <= 1e-5
    card = read_runtime_card(runtime, artifact_hash(ec.artifact))
    assert card["dynamic_resolution"] is True and card["exports"].keys() == {"torchscript"}
    # a runtime folder made for another artifact is refused, before any Phase 1 is written
    other_ec, _ = exported
    other = dataclasses.replace(
        ec,
        checkpoint=other_ec.checkpoint,
        artifact=other_ec.artifact,
        phase1_dir=str(tmp_path / "other_phase1"),
    )
    with pytest.raises(RuntimeExportError, match=rf"^{runtime} was exported from artifact "):
        run_export(other)
    assert not (tmp_path / "other_phase1").exists()
    # a folder but no formats, or formats but no folder: no runtime export
    for folder, formats in ((str(tmp_path / "no_formats"), []), (None, ["torchscript"])):
        plain = dataclasses.replace(
            ec,
            runtime_dir=folder,
            runtime_formats=formats,
            phase2_submission=str(tmp_path / f"plain_{folder is None}.h5"),
        )
        assert "runtime" not in run_export(plain)
    assert not (tmp_path / "no_formats").exists()
    (runtime / "runtime.json").write_text("{}")  # altered: its manifest catches it
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


# --- what the export writes and says, read back independently --------------------------------


def _csv_query_ids(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("query_id")
    return [line.split(",")[0] for line in lines[1:] if line.strip()]


@pytest.fixture
def exported(tmp_path_factory, tiny_minidisc):
    """A run_export (freeze, Phase 1, Phase 2) for each test below, of a model with 8 dims (not
    the 16 references' count, so that the two cannot be confused). Not shared by the tests
    (about a second each): mutmut records which tests reach a function while each test runs,
    so a shared fixture's export would count for the first test only, and the mutants of the
    export code would never meet the tests that read its outputs."""
    import dataclasses

    import torch

    from fisc.export.phase2 import run_export
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    tmp = tmp_path_factory.mktemp("exported")
    torch.manual_seed(2)
    cfg = ModelConfig(name="test_resnet", dims=8, eval_size=32)
    state = {"model." + k: v for k, v in build_descriptor_model(cfg).state_dict().items()}
    checkpoint = tmp / "dims8.ckpt"
    torch.save(
        {"hyper_parameters": {"model": dataclasses.asdict(cfg)}, "state_dict": state}, checkpoint
    )
    ec = _export_config(tmp, checkpoint, tiny_minidisc)
    return ec, run_export(ec)


def test_phase1_record_files_and_ids(exported, tiny_minidisc):
    import json
    from datetime import datetime, timedelta, timezone

    import torch

    from fisc.descriptors.h5io import read_attrs, read_submission, read_vectors
    from fisc.export.manifest import artifact_hash

    ec, summary = exported
    phase1 = Path(ec.phase1_dir)
    text = (phase1 / "phase1.json").read_text()
    assert text.startswith('{\n  "artifact_hash": "') and text.endswith('"\n}\n')  # for people too
    record = json.loads(text)
    dev_ids = _csv_query_ids(tiny_minidisc / "dev_ground_truth.csv")
    ref_ids = sorted(p.stem for p in (tiny_minidisc / "images" / "reference").glob("*.jpg"))
    assert sorted(p.name for p in phase1.iterdir()) == [
        "phase1.json",
        "queries.h5",
        "references.h5",
        "submission.h5",
    ]
    assert not list(phase1.parent.glob(".*partial"))
    created = datetime.strptime(record.pop("created"), "%Y-%m-%dT%H:%M:%S%z")
    assert abs(datetime.now(timezone.utc) - created) < timedelta(hours=1)
    assert record.pop("files").keys() == {"queries.h5", "references.h5", "submission.h5"}
    assert record == {
        "artifact_hash": artifact_hash(ec.artifact),
        "queries": len(dev_ids),
        "references": len(ref_ids),
        "dims": 8,
        "postprocess": None,
        "device": "cpu",
        "deterministic": True,
        "torch_version": torch.__version__,
    }
    for name, kind in (("references", "references"), ("queries", "queries")):
        attrs = read_attrs(phase1 / f"{name}.h5")
        assert attrs["set"] == kind and attrs["fisc_phase"] == 1
    assert read_attrs(phase1 / "submission.h5")["set"] == "submission"
    refs, queries = read_vectors(phase1 / "references.h5"), read_vectors(phase1 / "queries.h5")
    assert refs.ids.tolist() == ref_ids and queries.ids.tolist() == dev_ids
    assert refs.vectors.shape == (len(ref_ids), 8) and queries.vectors.shape == (len(dev_ids), 8)
    q, r = read_submission(phase1 / "submission.h5")
    np.testing.assert_array_equal(q.vectors, queries.vectors)
    np.testing.assert_array_equal(r.vectors, refs.vectors)
    assert q.ids.tolist() == dev_ids and r.ids.tolist() == ref_ids


def test_phase1_descriptors_are_the_artifacts_descriptors_of_each_role(exported, tiny_minidisc):
    """What Phase 1 ships is what the artifact's pipeline describes, per role."""
    from fisc.data.disc21 import Disc21
    from fisc.descriptors.h5io import read_vectors
    from fisc.export.load import load_artifact

    ec, _ = exported
    pipeline = load_artifact(ec.artifact)
    data = Disc21(tiny_minidisc)
    refs = read_vectors(Path(ec.phase1_dir) / "references.h5")
    queries = read_vectors(Path(ec.phase1_dir) / "queries.h5")
    for role, phase1, images in (
        ("reference", refs, data.images("reference")),
        ("query", queries, data.images("query")),
    ):
        picked = phase1.ids[[0, -1]]
        again, skipped = pipeline.describe(
            images.subset(picked), role, batch_size=1, per_image=True
        )
        assert skipped == [] and again.ids.tolist() == picked.tolist()
        np.testing.assert_array_equal(again.vectors, phase1.vectors[[0, -1]])


def test_phase2_summary_and_submission(exported, tiny_minidisc):
    from fisc.descriptors.h5io import read_attrs, read_submission, read_vectors
    from fisc.export.manifest import artifact_hash
    from fisc.provenance import sha256_of

    ec, summary = exported
    p2_ids = _csv_query_ids(tiny_minidisc / "phase2_ground_truth.csv")
    seconds = summary.pop("seconds")
    assert isinstance(seconds, float) and 0 < seconds < 600 and seconds == round(seconds, 1)
    assert summary == {
        "submission": ec.phase2_submission,
        "queries": len(p2_ids),
        "references": 16,
        "dims": 8,
        "postprocess": None,
        "artifact_hash": artifact_hash(ec.artifact),
        "references_rechecked": 8,
        "reference_max_abs_diff": 0.0,
        "device": "cpu",
    }
    attrs = read_attrs(ec.phase2_submission)
    assert {k: attrs[k] for k in ("artifact_hash", "fisc_phase", "set")} == {
        "artifact_hash": artifact_hash(ec.artifact),
        "fisc_phase": 2,
        "set": "submission",
    }
    refs_file = Path(ec.phase1_dir) / "references.h5"
    assert attrs["phase1_references_sha256"] == sha256_of(refs_file)
    q, r = read_submission(ec.phase2_submission)
    assert q.ids.tolist() == p2_ids and q.vectors.shape == (len(p2_ids), 8)
    np.testing.assert_array_equal(r.vectors, read_vectors(refs_file).vectors)


def test_phase2_rechecks_at_most_every_reference(exported):
    import dataclasses

    from fisc.export.phase2 import export_phase2

    ec, _ = exported
    for sample, seed in ((100, 0), (3, 1)):
        out = Path(ec.phase2_submission).with_name(f"sample{sample}.h5")
        again = dataclasses.replace(
            ec, reference_check_sample=sample, seed=seed, phase2_submission=str(out)
        )
        assert export_phase2(again)["references_rechecked"] == min(sample, 16)


def test_check_phase1_lists_every_problem(exported, tmp_path):
    import json
    import shutil

    from fisc.descriptors.h5io import read_vectors, write_vectors
    from fisc.export.manifest import artifact_hash
    from fisc.export.phase2 import ExportError, check_phase1
    from fisc.provenance import sha256_of

    ec, _ = exported
    good = artifact_hash(ec.artifact)
    phase1 = tmp_path / "phase1"
    shutil.copytree(ec.phase1_dir, phase1)
    record = check_phase1(phase1, good)
    assert record == json.loads((phase1 / "phase1.json").read_text())
    with pytest.raises(ExportError, match=rf"^artifact hash abc differs from Phase 1's {good}: "):
        check_phase1(phase1, "abc")
    # queries.h5 gone, submission.h5 rewritten with another stamp (its sha256 recorded anew)
    (phase1 / "queries.h5").unlink()
    sub = read_vectors(phase1 / "references.h5")
    write_vectors(phase1 / "submission.h5", sub, attrs={"artifact_hash": "other"})
    record["files"]["submission.h5"] = sha256_of(phase1 / "submission.h5")
    (phase1 / "phase1.json").write_text(json.dumps(record))
    with pytest.raises(ExportError) as info:
        check_phase1(phase1, good)
    assert str(info.value) == (
        f"Phase 1 outputs in {phase1} fail their checks: queries.h5: missing; "
        f"submission.h5: not stamped with artifact hash {good}"
    )
    del record["files"]
    (phase1 / "phase1.json").write_text(json.dumps(record))
    with pytest.raises(ExportError) as info:
        check_phase1(phase1, good)
    assert str(info.value) == (
        f"Phase 1 outputs in {phase1} fail their checks: phase1.json lists no files (written "
        "by an older fisc: export again)"
    )
    (phase1 / "references.h5").unlink()
    with pytest.raises(ExportError, match=rf"^missing Phase 1 reference descriptors in {phase1} "):
        check_phase1(phase1, good)
    (phase1 / "phase1.json").unlink()
    with pytest.raises(ExportError, match="missing Phase 1 reference descriptors"):
        check_phase1(phase1, good)


def test_phase2_refuses_another_torch_and_names_overlaps_and_references(
    exported, tmp_path, tiny_minidisc
):
    import dataclasses
    import json
    import shutil

    from fisc.export.phase2 import ExportError, export_phase2

    ec, _ = exported
    phase1 = tmp_path / "phase1"
    shutil.copytree(ec.phase1_dir, phase1)
    out = tmp_path / "p2.h5"
    ec = dataclasses.replace(ec, phase1_dir=str(phase1), phase2_submission=str(out))
    record = json.loads((phase1 / "phase1.json").read_text())
    (phase1 / "phase1.json").write_text(json.dumps({**record, "torch_version": "0.0.1"}))
    with pytest.raises(ExportError, match=r"^Phase 1 ran on cpu with torch 0\.0\.1, this export"):
        export_phase2(ec)
    (phase1 / "phase1.json").write_text(json.dumps(record))
    # seven Phase 2 queries that were Phase 1 queries: counted, the first five by id named
    root = tmp_path / "data"
    shutil.copytree(tiny_minidisc, root)
    dev = sorted(_csv_query_ids(root / "dev_ground_truth.csv"))
    lines = (root / "phase2_ground_truth.csv").read_text().splitlines()
    (root / "phase2_ground_truth.csv").write_text(
        "\n".join([*lines, *(f"{q}," for q in reversed(dev[:7]))]) + "\n"
    )
    with pytest.raises(ExportError) as info:
        export_phase2(dataclasses.replace(ec, data_root=str(root)))
    named = [dev[0], dev[1], dev[2], dev[3], dev[4]]
    assert str(info.value) == f"7 Phase 2 queries are Phase 1 queries, e.g. {named}"
    (root / "phase2_ground_truth.csv").write_text("\n".join(lines) + "\n")
    # one more reference image than Phase 1 described
    refs = sorted((root / "images" / "reference").glob("*.jpg"))
    shutil.copy(refs[0], refs[0].with_name("R999999.jpg"))
    with pytest.raises(ExportError, match="^Phase 1 reference descriptors do not cover the ref"):
        export_phase2(dataclasses.replace(ec, data_root=str(root)))
    refs[0].with_name("R999999.jpg").unlink()
    # an undecodable Phase 2 query stops the export; nothing is written
    p2 = _csv_query_ids(root / "phase2_ground_truth.csv")
    (root / "images" / "query" / f"{p2[0]}.jpg").write_bytes(b"not a jpeg")
    from fisc.data.decode import ImageDecodeError

    with pytest.raises(ImageDecodeError, match=rf"cannot decode image .*{p2[0]}\.jpg: "):
        export_phase2(dataclasses.replace(ec, data_root=str(root)))
    assert not out.exists()


def test_recheck_returns_the_largest_difference_within_tolerance(exported, tiny_minidisc):
    import dataclasses

    from fisc.data.disc21 import Disc21
    from fisc.descriptors import Descriptors
    from fisc.descriptors.h5io import read_vectors
    from fisc.export.load import load_artifact
    from fisc.export.phase2 import ExportError, recheck_references

    ec, _ = exported
    pipeline = load_artifact(ec.artifact)
    refs = read_vectors(Path(ec.phase1_dir) / "references.h5")
    vectors = refs.vectors.astype(np.float64)
    vectors[3, 2] += 2e-4
    vectors[5, 0] -= 5e-4  # the largest, negative
    shifted = Descriptors(refs.ids, vectors)
    references = Disc21(tiny_minidisc).images("reference")
    sample = np.array([1, 3, 5])
    loose = dataclasses.replace(ec, reference_tolerance=1e-3)
    worst = recheck_references(pipeline, references, shifted, sample, loose)
    assert worst == pytest.approx(5e-4)
    for tolerance in (worst, 1.0):  # the bound is inclusive; any tolerance > 0 is one
        at = dataclasses.replace(ec, reference_tolerance=tolerance)
        assert recheck_references(pipeline, references, shifted, sample, at) == worst
    assert recheck_references(pipeline, references, shifted, np.array([0, 1]), ec) == 0.0
    tight = dataclasses.replace(ec, reference_tolerance=4e-4)
    with pytest.raises(
        ExportError, match=r"differ from Phase 1 \(max 0\.0005, tolerance 0\.0004\)"
    ):
        recheck_references(pipeline, references, shifted, sample, tight)
    with pytest.raises(ExportError, match=r"differ from Phase 1 \(max 0\.0002, tolerance 0\)"):
        recheck_references(pipeline, references, shifted, np.array([3]), ec)
    narrow = Descriptors(refs.ids, refs.vectors[:, :4])
    with pytest.raises(ExportError, match=r"have shape \(2, 8\), Phase 1's \(2, 4\)"):
        recheck_references(pipeline, references, narrow, np.array([0, 1]), ec)


def test_export_config_defaults_and_golden_tolerance(checkpoint, tiny_minidisc, tmp_path):
    from fisc.export.golden import GPU_GOLDEN_TOLERANCE
    from fisc.export.phase2 import ExportConfig, _golden_tolerance

    ec = ExportConfig(None, "a", "r", "q1", "q2", "p1", "p2")
    assert (ec.reference_check_sample, ec.batch_size, ec.num_workers, ec.seed) == (32, 64, 2, 0)
    assert (ec.device, ec.deterministic, ec.reference_tolerance) == ("cpu", True, 0.0)
    assert ec.golden_tolerance is None and ec.postprocess == "run" and ec.runtime_formats == []
    assert _golden_tolerance(ec) == 0.0
    ec.device = "cuda:0"
    assert _golden_tolerance(ec) == GPU_GOLDEN_TOLERANCE > 0
    ec.golden_tolerance = 0.25
    assert _golden_tolerance(ec) == 0.25


def test_run_export_needs_an_artifact_or_a_checkpoint(tmp_path, tiny_minidisc):
    from fisc.export.phase2 import ExportError, run_export

    for checkpoint in (None, str(tmp_path / "none.ckpt")):
        ec = _export_config(tmp_path, checkpoint, tiny_minidisc)
        with pytest.raises(ExportError) as info:
            run_export(ec)
        assert str(info.value) == (
            f"no artifact at {ec.artifact} and no checkpoint to freeze ({checkpoint}); "
            "run `make demo` or set checkpoint"
        )
    assert not (tmp_path / "phase1").exists()


def test_an_artifact_must_come_from_the_checkpoint_and_its_fitted_postprocessor(
    exported, checkpoint, tmp_path
):
    import dataclasses
    import shutil

    from fisc.descriptors import Descriptors
    from fisc.export.phase2 import ExportError, check_artifact_source
    from fisc.inference import run_postprocess_path
    from fisc.postprocess.spec import PostProcessor

    ec, _ = exported  # frozen from its own 8-dim checkpoint, without post-processing
    check_artifact_source(ec)
    for absent in (None, str(tmp_path / "gone.ckpt")):  # nothing to compare with
        check_artifact_source(dataclasses.replace(ec, checkpoint=absent))
    with pytest.raises(ExportError) as info:
        check_artifact_source(dataclasses.replace(ec, checkpoint=str(checkpoint)))
    assert str(info.value) == (
        f"artifact {ec.artifact} was frozen from another checkpoint than {checkpoint} "
        "(retrained since?): move the artifact and the Phase 1 folder away to export this "
        "checkpoint, or set checkpoint=null to export the artifact as it is"
    )
    # the run has fitted a post-processor since the artifact was frozen without one
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "last.ckpt"
    shutil.copy(ec.checkpoint, ckpt)
    rng = np.random.default_rng(0)
    train = Descriptors(np.array([f"T{i}" for i in range(40)]), rng.normal(size=(40, 8)))
    PostProcessor("pca4,l2").fit(train).save(run_postprocess_path(ckpt))
    with_run = dataclasses.replace(ec, checkpoint=str(ckpt))
    with pytest.raises(ExportError) as info:
        check_artifact_source(with_run)
    assert str(info.value) == (
        f"artifact {ec.artifact} was frozen with post-processing None, not the run's fitted "
        f"'pca4,l2' ({run_postprocess_path(ckpt)}): move the artifact and the Phase 1 folder "
        "away to export the run as it is now"
    )
    check_artifact_source(dataclasses.replace(with_run, postprocess=None))  # not asked for
    # frozen with the run's post-processor: accepted; refitted since on other rows (the same
    # spec, another fit set): refused
    from fisc.export.phase2 import run_export

    def fresh(name, **over):  # an export of its own: artifact, Phase 1 and Phase 2
        return _export_config(tmp_path / name, ckpt, with_run.data_root, **over)

    frozen = fresh("pp")  # run_export freezes the run's fitted post-processor...
    assert run_export(frozen)["postprocess"] == "pca4,l2"
    assert run_export(fresh("bare", postprocess=None))["postprocess"] is None  # ...if asked to
    check_artifact_source(frozen)
    other = Descriptors(train.ids[:30], train.vectors[:30])
    PostProcessor("pca4,l2").fit(other).save(run_postprocess_path(ckpt))
    with pytest.raises(ExportError, match=r"was frozen with post-processing 'pca4,l2', not the"):
        check_artifact_source(frozen)


def test_exports_describe_each_set_per_image_with_progress_under_deterministic_kernels(
    exported, tmp_path, monkeypatch, tiny_minidisc
):
    """What each export asks of the pipeline: every set described once, one image per forward
    pass (bit-identical however batched), with a progress bar naming the set, with the export's
    batch size, workers and device, and inside deterministic kernels when (and only when) the
    config asks for them; the Phase 2 reference check on ``reference_check_sample`` distinct
    references drawn by ``seed``; the artifact loaded once, at the configured golden tolerance
    and device. The outputs go to folders that do not exist yet."""
    import dataclasses

    import torch

    from fisc.export import phase2
    from fisc.export.phase2 import export_phase1, export_phase2
    from fisc.inference import DescriptorPipeline

    calls = []
    describe = DescriptorPipeline.describe

    def spy(self, images, role, **kwargs):
        deterministic = torch.are_deterministic_algorithms_enabled()
        desc = kwargs.pop("desc")
        calls.append((role, desc, list(images.ids), deterministic, dict(kwargs)))
        return describe(self, images, role, desc=desc, **kwargs)

    monkeypatch.setattr(DescriptorPipeline, "describe", spy)
    loads = []
    load_artifact = phase2.load_artifact

    def load_spy(root, **kwargs):
        loads.append((root, torch.are_deterministic_algorithms_enabled(), kwargs))
        return load_artifact(root, **kwargs)

    monkeypatch.setattr(phase2, "load_artifact", load_spy)
    ec, _ = exported
    ref_ids = sorted(p.stem for p in (tiny_minidisc / "images" / "reference").glob("*.jpg"))
    dev_ids = _csv_query_ids(tiny_minidisc / "dev_ground_truth.csv")
    p2_ids = _csv_query_ids(tiny_minidisc / "phase2_ground_truth.csv")
    phase1_sets = [("reference", "phase 1 references"), ("query", "phase 1 queries")]
    phase2_sets = [("reference", "reference check"), ("query", "phase 2 queries")]
    rechecked = []
    # Phase 1 with deterministic kernels off and on; Phase 2 (on and off) reuses the second
    steps = (
        ("1", False, 1, "off"),
        ("1", True, 0, "on"),
        ("2", True, 0, "on"),
        ("2", False, 1, "on"),
    )
    for step, deterministic, workers, phase1 in steps:
        ec2 = dataclasses.replace(
            ec,
            phase1_dir=str(tmp_path / f"nested_{phase1}" / "phase1"),
            phase2_submission=str(tmp_path / f"p2_{deterministic}" / "submission.h5"),
            deterministic=deterministic,
            num_workers=workers,
            batch_size=3,
            reference_check_sample=5,
            seed=7,
            golden_tolerance=0.25 if deterministic else None,
        )
        calls.clear()
        loads.clear()
        (export_phase1 if step == "1" else export_phase2)(ec2)
        # the artifact loaded once (its golden check under the same kernels as the export), at
        # the configured tolerance (0 on cpu)
        golden = {"tolerance": 0.25 if deterministic else 0.0, "device": "cpu"}
        assert loads == [(ec.artifact, deterministic, golden)]
        expected = dict(
            batch_size=3, num_workers=workers, device="cpu", progress=True, per_image=True
        )
        assert all(c[3] is deterministic and c[4] == expected for c in calls)
        if step == "1":
            assert [c[:2] for c in calls] == phase1_sets
            assert calls[0][2] == ref_ids and calls[1][2] == sorted(dev_ids)
        else:
            assert [c[:2] for c in calls] == phase2_sets
            assert calls[1][2] == sorted(p2_ids)
            assert len(calls[0][2]) == 5 and set(calls[0][2]) < set(ref_ids)
            rechecked.append(calls[0][2])
    assert rechecked[0] == rechecked[1]  # the same seed draws the same references


def test_phase2_submission_is_validated_before_it_is_kept(exported, tmp_path, monkeypatch):
    """The written Phase 2 submission is checked against the Phase 2 query ids and the Phase 1
    reference ids before it is moved into place: a writer that loses one query and one
    reference is refused with both problems listed, and nothing is left at its path."""
    import dataclasses

    from fisc.descriptors import Descriptors
    from fisc.export import phase2

    ec, _ = exported
    write = phase2.write_submission
    lost = []

    def lossy(path, queries, references, attrs):
        lost[:] = [queries.ids[-1], references.ids[0]]
        q = Descriptors(queries.ids[:-1], queries.vectors[:-1])
        r = Descriptors(references.ids[1:], references.vectors[1:])
        write(path, q, r, attrs=attrs)

    monkeypatch.setattr(phase2, "write_submission", lossy)
    out = tmp_path / "lossy.h5"
    with pytest.raises(phase2.ExportError) as info:
        phase2.export_phase2(dataclasses.replace(ec, phase2_submission=str(out)))
    assert str(info.value) == (
        "Phase 2 submission fails validation:\n"
        f"query_ids: 1 ids of the list are missing from the file (e.g. '{lost[0]}')\n"
        f"reference_ids: 1 ids of the list are missing from the file (e.g. '{lost[1]}')"
    )
    assert not out.exists() and not list(tmp_path.iterdir())
