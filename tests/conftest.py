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


@pytest.fixture(scope="session")
def tiny_minidisc(tmp_path_factory) -> Path:
    """A tiny minidisc, built once per test session (read-only for tests)."""
    from helpers.minidisc import TINY_SPEC

    from fisc.data.minidisc import build_minidisc

    root = tmp_path_factory.mktemp("tiny") / "minidisc"
    return build_minidisc(root, TINY_SPEC, progress=False)


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
