"""Freezing a checkpoint (fisc.export.freeze): the artifact's files, model card and manifest,
a post-processor and probe images of one's own."""

from __future__ import annotations

import numpy as np
import pytest


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
    assert card["timm"]["name"] == "test_resnet" and card["dims"] == 16
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
