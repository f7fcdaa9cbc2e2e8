"""TorchScript and ONNX runtimes of an artifact (fisc.export.runtime): the same descriptors
as the eager model at any batch size (and resolution when asked), refused where they would not
be, and ``fisc export-runtime``."""

from __future__ import annotations

import numpy as np
import pytest


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
