"""Shared fixtures: offline environment, the real Hydra configs, a tiny minidisc."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers.config import CONF  # noqa: E402

torch.set_num_threads(2)

TINY_SPEC = dict(
    n_train=24,
    n_reference=16,
    n_dev_queries=12,
    n_phase2_queries=12,
    n_novel_queries=12,
    match_fraction=0.5,
    image_size=64,
    seed=0,
)


@pytest.fixture(scope="session")
def tiny_minidisc(tmp_path_factory) -> Path:
    """A tiny minidisc, built once per test session (read-only for tests)."""
    from fisc.data.minidisc import MinidiscSpec, build_minidisc

    root = tmp_path_factory.mktemp("tiny") / "minidisc"
    return build_minidisc(root, MinidiscSpec(**TINY_SPEC), progress=False)


@pytest.fixture
def compose_cfg(tmp_path):
    """``compose_cfg(*overrides)``: the real ``conf/train.yaml`` composed with overrides, with
    data and outputs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir

    def _compose(*overrides: str):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    f"paths.data_dir={tmp_path}/data",
                    f"paths.output_dir={tmp_path}/out",
                    *overrides,
                ],
            )

    return _compose
