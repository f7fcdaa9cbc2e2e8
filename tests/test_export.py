"""Submission validation and frozen artifacts (fisc.export)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fisc.challenge import read_id_list, validate_submission
from fisc.challenge import validate_submission_main as validate_main

QUERIES = [f"Q{i:05d}" for i in range(5)]
REFERENCES = [f"R{i:06d}" for i in range(7)]


def _write(path, **override):
    rng = np.random.default_rng(0)
    data = {
        "query": rng.standard_normal((len(QUERIES), 8)).astype(np.float32),
        "reference": rng.standard_normal((len(REFERENCES), 8)).astype(np.float32),
        "query_ids": np.array([q.encode() for q in QUERIES], dtype="S6"),
        "reference_ids": np.array([r.encode() for r in REFERENCES], dtype="S7"),
    }
    data.update(override)
    with h5py.File(path, "w") as f:
        for name, value in data.items():
            if value is not None:
                f.create_dataset(name, data=value)
    return path


def test_valid_submission_passes(tmp_path, capsys):
    path = _write(tmp_path / "sub.h5")
    assert validate_submission(path, QUERIES, REFERENCES) == []
    assert validate_main([str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def _one_failure(path, *words, **kwargs):
    failures = validate_submission(path, **kwargs)
    assert len(failures) == 1, failures
    for word in words:
        assert word in failures[0], failures
    return failures[0]


def test_missing_dataset(tmp_path):
    _one_failure(_write(tmp_path / "s.h5", reference_ids=None), "missing", "reference_ids")


def test_float64(tmp_path):
    vectors = np.zeros((len(QUERIES), 8), dtype=np.float64) + 0.5
    _one_failure(_write(tmp_path / "s.h5", query=vectors), "query", "float64", "float32")


def test_nan_row(tmp_path):
    vectors = np.ones((len(REFERENCES), 8), dtype=np.float32)
    vectors[3, 2] = np.nan
    line = _one_failure(_write(tmp_path / "s.h5", reference=vectors), "reference", "NaN")
    assert "3" in line


def test_too_many_dims(tmp_path):
    path = _write(
        tmp_path / "s.h5",
        query=np.ones((len(QUERIES), 257), np.float32),
        reference=np.ones((len(REFERENCES), 257), np.float32),
    )
    failures = validate_submission(path)
    assert len(failures) == 2 and all("257 dims" in f for f in failures), failures


def test_dims_differ(tmp_path):
    path = _write(tmp_path / "s.h5", query=np.ones((len(QUERIES), 4), np.float32))
    _one_failure(path, "4 dims", "8")


def test_unsorted_ids(tmp_path):
    ids = np.array([q.encode() for q in QUERIES[::-1]], dtype="S6")
    _one_failure(_write(tmp_path / "s.h5", query_ids=ids), "query_ids", "not sorted")


def test_duplicate_id(tmp_path):
    refs = REFERENCES[:-1] + [REFERENCES[-2]]
    ids = np.array([r.encode() for r in refs], dtype="S7")
    _one_failure(_write(tmp_path / "s.h5", reference_ids=ids), "duplicate", "R000005")


def test_malformed_id(tmp_path):
    ids = np.array([q.encode() for q in QUERIES[:-1] + ["Q1234"]], dtype="S6")
    _one_failure(_write(tmp_path / "s.h5", query_ids=ids), "malformed", "Q1234")


def test_row_count_mismatch(tmp_path):
    path = _write(tmp_path / "s.h5", query=np.ones((len(QUERIES) + 1, 8), np.float32))
    _one_failure(path, "6 rows", "5 ids")


def test_ids_against_lists(tmp_path, capsys):
    path = _write(tmp_path / "s.h5")
    line = _one_failure(path, "missing", "Q00005", query_ids=QUERIES + ["Q00005"])
    assert line.startswith("query_ids: 1 ids")
    _one_failure(path, "not in the list", "R000006", reference_ids=REFERENCES[:-1])
    listing = tmp_path / "queries.txt"
    listing.write_text("\n".join(QUERIES[:3]) + "\n")
    assert validate_main([str(path), "--queries", str(listing)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "2 ids in the file" in out


def test_ground_truth_csv_lists(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nQ00000,R000001\nQ00001,\nQ00002,R000009\n")
    assert read_id_list(gt, "query") == (["Q00000", "Q00001", "Q00002"], True)
    assert read_id_list(gt, "reference") == (["R000001", "R000009"], False)
    path = _write(tmp_path / "s.h5")
    assert validate_main([str(path), "--references", str(gt)]) == 1  # R000009 missing


def test_not_hdf5(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("nope")
    assert "not a readable HDF5" in validate_submission(bad)[0]
    assert validate_submission(tmp_path / "absent.h5")[0].endswith("does not exist")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_validate_submission_help_through_fisc(flag, capsys):
    from fisc.cli import main

    with pytest.raises(SystemExit) as e:
        main(["validate-submission", flag])
    assert e.value.code == 0
    assert "usage: fisc validate-submission" in capsys.readouterr().out


def test_validate_submission_through_fisc_reports_failures(tmp_path, capsys):
    from fisc.cli import main

    bad = tmp_path / "x.h5"
    bad.write_text("nope")
    assert main(["validate-submission", str(bad)]) != 0
    captured = capsys.readouterr()
    assert "not a readable HDF5" in captured.out + captured.err


# --- freeze / load_artifact ---------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import dataclasses

    import torch

    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="resnet18", dims=16, eval_size=32)
    model = build_descriptor_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model": dataclasses.asdict(cfg), "lr": 0.1, "epochs": 2},
            "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    from fisc.export.freeze import freeze

    return freeze(checkpoint, tmp_path_factory.mktemp("art") / "artifact")


def _copy(artifact, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(artifact, dst)
    return dst


def test_freeze_writes_verifiable_artifact(artifact, checkpoint):
    import json

    from fisc.export.artifact import MANIFEST_FILE
    from fisc.export.load import load_artifact
    from fisc.provenance import sha256_of

    names = sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())
    assert names == sorted(
        ["MANIFEST.sha256", "golden.h5", "model.safetensors", "model_card.json"]
        + [f"probe/probe_{i:02d}.png" for i in range(8)]
    )
    lines = (artifact / MANIFEST_FILE).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == [n for n in names if n != MANIFEST_FILE]
    card = json.loads((artifact / "model_card.json").read_text())
    assert card["timm"]["name"] == "resnet18" and card["dims"] == 16
    assert card["preprocess"]["resize"] == "square resize, bilinear"
    assert card["preprocess"]["eval_size"] == 32
    assert card["training_config"] == {"epochs": 2, "lr": 0.1}
    assert card["torch_version"]
    pipeline = load_artifact(artifact)
    model, cfg, digest = pipeline.model, pipeline.model_cfg, pipeline.artifact_hash
    assert cfg.dims == 16 and cfg.weights.source == "none"
    assert digest == sha256_of(artifact / MANIFEST_FILE)
    assert not any(k.startswith("fc.") for k in model.state_dict())
    with pytest.raises(FileExistsError, match="already exists"):
        from fisc.export.freeze import freeze

        freeze(checkpoint, artifact)


def test_probe_images_are_deterministic(tmp_path):
    from fisc.export.probes import synthetic_probe_images

    a = synthetic_probe_images(tmp_path / "a")
    b = synthetic_probe_images(tmp_path / "b")
    assert a.ids == b.ids and len(a) == 8
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a.paths, b.paths, strict=True))


def test_tampered_weights_named(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = _copy(artifact, tmp_path)
    path = art / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 differs.*manifest check"):
        load_artifact(art)


def test_missing_golden(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.golden import check_golden
    from fisc.export.load import load_artifact

    art = _copy(artifact, tmp_path)
    (art / "golden.h5").unlink()
    with pytest.raises(ArtifactError, match=r"golden\.h5: listed in the manifest but missing"):
        load_artifact(art)
    pipeline = load_artifact(art, verify=False)
    with pytest.raises(ArtifactError, match=r"golden\.h5: missing.*golden check"):
        check_golden(pipeline, art)


def _resave_changed_weight(art):
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(art / "model.safetensors"))
    state["projection.weight"] = state["projection.weight"] + 0.01 * torch.ones(1)
    save_file(state, str(art / "model.safetensors"), metadata={"format": "pt"})


def test_changed_weight_stale_manifest(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = _copy(artifact, tmp_path)
    _resave_changed_weight(art)
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 differs"):
        load_artifact(art)


def test_changed_weight_fresh_manifest_fails_golden(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact
    from fisc.export.manifest import write_manifest

    art = _copy(artifact, tmp_path)
    _resave_changed_weight(art)
    write_manifest(art)  # a consistent manifest: only the golden check can catch it
    with pytest.raises(ArtifactError, match="golden descriptors differ"):
        load_artifact(art)
    load_artifact(art, tolerance=1.0)  # within a (huge) tolerance it loads


def test_unlisted_file_and_missing_manifest(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = _copy(artifact, tmp_path)
    (art / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match=r"extra\.txt: not listed"):
        load_artifact(art)
    (art / "MANIFEST.sha256").unlink()
    with pytest.raises(ArtifactError, match=r"MANIFEST\.sha256: missing"):
        load_artifact(art)


def test_freeze_with_postprocess_and_own_probe(checkpoint, tmp_path):
    import json

    from fisc.data.disc21 import list_images
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact, load_postprocessor
    from fisc.export.probes import synthetic_probe_images
    from fisc.postprocess.spec import PostProcessor

    probe = synthetic_probe_images(tmp_path / "mine", n=3, seed=1)
    pp_path = tmp_path / "pp.npz"
    PostProcessor("center,pca8,l2").fit(np.random.default_rng(0).standard_normal((50, 16))).save(
        pp_path
    )
    art = freeze(checkpoint, tmp_path / "a", probe_images=probe, postprocess=pp_path)
    card = json.loads((art / "model_card.json").read_text())
    assert card["postprocess"]["spec"] == "center,pca8,l2" and card["postprocess"]["dims"] == 8
    assert list_images(art / "probe").ids == probe.ids
    load_artifact(art)
    assert load_postprocessor(art).dims == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.")]  # no temp dir left
    bad = tmp_path / "pp16.npz"
    PostProcessor("pca4").fit(np.ones((20, 5)) + np.arange(5)).save(bad)
    with pytest.raises(ValueError, match="expects 5-d input"):
        freeze(checkpoint, tmp_path / "b", postprocess=bad)
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]


# --- Phase 1 / Phase 2 export ---------------------------------------------------------------


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


def test_deterministic_kernels_set_and_restore():
    import os

    import torch

    from fisc.determinism import deterministic_kernels

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    torch.set_float32_matmul_precision("high")
    try:
        with deterministic_kernels():
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert not torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "highest"
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
            # no NaN fill of new tensors: torch.empty keeps whatever the memory held
            assert not torch.utils.deterministic.fill_uninitialized_memory
            assert not torch.isnan(torch.empty(1 << 16)).all()
        assert torch.utils.deterministic.fill_uninitialized_memory  # torch's default, restored
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.are_deterministic_algorithms_enabled() == before[0]
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == before[3]
        with deterministic_kernels(enabled=False):
            assert torch.are_deterministic_algorithms_enabled() == before[0]
    finally:
        torch.set_float32_matmul_precision(before[2])


# --- TorchScript / ONNX runtimes ---------------------------------------------------------------


def _eager(artifact, images):
    import torch

    from fisc.export.load import load_artifact

    model = load_artifact(artifact, verify=False).model
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def test_runtime_exports_match_eager_with_dynamic_batch(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.manifest import artifact_hash
    from fisc.export.runtime import (
        RuntimeExportError,
        export_runtimes,
        load_runtime,
        read_runtime_card,
    )

    out = tmp_path / "runtime"
    card = export_runtimes(artifact, out)
    assert set(card["exports"]) == {"torchscript", "onnx"}
    for fmt, e in card["exports"].items():
        assert [c["batch"] for c in e["checks"] if "role" not in c] == [1, 3, 8], fmt
        roles = [(c["role"], c["batch"]) for c in e["checks"] if "role" in c]
        assert roles == [(r, b) for r in ("query", "reference") for b in (1, 3, 8)], fmt
        assert e["max_abs_diff"] <= 1e-5
    assert read_runtime_card(out, artifact_hash(artifact))["input"]["shape"] == ["batch", 3, 32, 32]
    # batch sizes never seen while exporting, fresh inputs: same as the eager model
    rng = np.random.default_rng(3)
    for b in (2, 13):
        x = rng.standard_normal((b, 3, 32, 32)).astype(np.float32)
        want = _eager(artifact, x)
        for name in ("descriptor.torchscript.pt", "descriptor.onnx"):
            got = load_runtime(out / name)(x)
            assert got.shape == (b, 16)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    # a fixed-resolution export refuses other sizes
    wrong = np.zeros((1, 3, 48, 48), np.float32)
    with pytest.raises(Exception, match="32x32"):
        load_runtime(out / "descriptor.torchscript.pt")(wrong)
    with pytest.raises(Exception, match="dimensions"):
        load_runtime(out / "descriptor.onnx")(wrong)
    with pytest.raises(FileExistsError):
        export_runtimes(artifact, out)
    with pytest.raises(RuntimeExportError, match="exported from artifact"):
        read_runtime_card(out, "0" * 64)
    (out / "descriptor.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="descriptor.onnx: sha256 differs"):
        read_runtime_card(out)


def test_runtime_dynamic_resolution(artifact, tmp_path):
    from fisc.export.runtime import export_runtimes, load_runtime

    out = tmp_path / "dyn"
    card = export_runtimes(artifact, out, dynamic_resolution=True)
    sizes = {(c["height"], c["width"]) for c in card["exports"]["onnx"]["checks"]}
    assert sizes == {(32, 32), (64, 64), (32, 64)}
    assert card["input"]["shape"] == ["batch", 3, "height", "width"]
    x = np.random.default_rng(4).standard_normal((3, 3, 48, 80)).astype(np.float32)
    want = _eager(artifact, x)
    for name in ("descriptor.torchscript.pt", "descriptor.onnx"):
        np.testing.assert_allclose(load_runtime(out / name)(x), want, atol=1e-5, err_msg=name)


def test_dynamic_resolution_refused_for_size_dependent_backbones(tmp_path):
    from fisc.export.runtime import RuntimeExportError, check_dynamic_resolution
    from fisc.models.descriptor import ModelConfig, build_descriptor_model
    from fisc.models.weights import WeightsConfig

    def build(name, **kwargs):
        cfg = ModelConfig(
            name=name, dims=8, model_kwargs=kwargs, weights=WeightsConfig(source="none")
        )
        return build_descriptor_model(cfg)

    with pytest.raises(RuntimeExportError, match=r"'same' padding.*Conv2dSame"):
        check_dynamic_resolution(build("tf_efficientnet_lite0"), "tf_efficientnet_lite0")
    check_dynamic_resolution(build("efficientnet_lite0"), "efficientnet_lite0")  # static padding
    vit = dict(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(RuntimeExportError, match="dynamic_img_size"):
        check_dynamic_resolution(build("vit_tiny_patch16_224", **vit), "vit")
    check_dynamic_resolution(build("vit_tiny_patch16_224", **vit, dynamic_img_size=True), "vit")


def test_runtime_export_that_drifts_from_eager_fails_and_leaves_nothing(
    artifact, tmp_path, monkeypatch
):
    import fisc.export.runtime as runtime

    real = runtime.load_runtime
    monkeypatch.setattr(runtime, "load_runtime", lambda p: lambda x: real(p)(x) + 1e-3)
    with pytest.raises(runtime.RuntimeExportError, match="differs from the eager model by 0.001"):
        runtime.export_runtimes(artifact, tmp_path / "rt", formats=["torchscript"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(runtime.RuntimeExportError, match="unknown runtime formats"):
        runtime.export_runtimes(artifact, tmp_path / "rt", formats=["tflite"])


def test_cli_export_runtime(artifact, tmp_path, capsys):
    from fisc.cli import main

    assert (
        main(
            [
                "export-runtime",
                str(artifact),
                "--out",
                str(tmp_path / "r"),
                "--format",
                "torchscript",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "torchscript" in out and "over 9 checks" in out
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "MANIFEST.sha256",
        "descriptor.torchscript.pt",
        "runtime.json",
    ]


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
