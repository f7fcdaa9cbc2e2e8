"""Fixtures of the export tests: a small training checkpoint (timm's ``test_resnet``, 16 dims,
32 px; six times faster to export than resnet18, and nothing here depends on the backbone) and
the artifact frozen from it, each built once per session (read-only: a test that alters an
artifact works on a copy, ``helpers.artifacts.copy_artifact``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    import dataclasses

    import torch

    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="test_resnet", dims=16, eval_size=32)
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


@pytest.fixture(scope="session")
def artifact(checkpoint, tmp_path_factory):
    from fisc.export.freeze import freeze

    return freeze(checkpoint, tmp_path_factory.mktemp("art") / "artifact")
