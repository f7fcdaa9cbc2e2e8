"""Golden descriptors (fisc.export.golden), recomputed and compared when loading: a missing
``golden.h5``, and other weights under a consistent manifest."""

from __future__ import annotations

import pytest
from helpers.artifacts import copy_artifact, resave_changed_weight


def test_missing_golden(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.golden import check_golden
    from fisc.export.load import load_artifact

    art = copy_artifact(artifact, tmp_path)
    (art / "golden.h5").unlink()
    with pytest.raises(ArtifactError, match=r"golden\.h5: listed in the manifest but missing"):
        load_artifact(art)
    pipeline = load_artifact(art, verify=False)
    with pytest.raises(ArtifactError, match=r"golden\.h5: missing.*golden check"):
        check_golden(pipeline, art)


def test_changed_weight_fresh_manifest_fails_golden(artifact, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.load import load_artifact
    from fisc.export.manifest import write_manifest

    art = copy_artifact(artifact, tmp_path)
    resave_changed_weight(art)
    write_manifest(art)  # a consistent manifest: only the golden check can catch it
    with pytest.raises(ArtifactError, match="golden descriptors differ"):
        load_artifact(art)
    load_artifact(art, tolerance=1.0)  # within a (huge) tolerance it loads
