"""An artifact's ``MANIFEST.sha256`` (fisc.export.manifest), checked when loading: a changed,
unlisted or missing file is named."""

from __future__ import annotations

import pytest
from helpers.artifacts import copy_artifact, resave_changed_weight


def test_tampered_weights_named(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = copy_artifact(artifact, tmp_path)
    path = art / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 differs.*manifest check"):
        load_artifact(art)


def test_changed_weight_stale_manifest(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = copy_artifact(artifact, tmp_path)
    resave_changed_weight(art)
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 differs"):
        load_artifact(art)


def test_unlisted_file_and_missing_manifest(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact

    art = copy_artifact(artifact, tmp_path)
    (art / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match=r"extra\.txt: not listed"):
        load_artifact(art)
    (art / "MANIFEST.sha256").unlink()
    with pytest.raises(ArtifactError, match=r"MANIFEST\.sha256: missing"):
        load_artifact(art)
