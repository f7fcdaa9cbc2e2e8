"""``benchmarks/gpu_able_share.py``'s weighting of ops by how often a stage runs them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_able_share.py"
_spec = importlib.util.spec_from_file_location("gpu_able_share", _PATH)
share = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(share)


def test_expected_costs_weigh_by_probability_and_chain_share():
    rates = {"crop": 1000.0, "blur": 500.0, "text": 100.0, "hflip": 2000.0}
    stages = [
        {"select": "all", "ops": {"crop": {"p": 0.5}, "hflip": None}},  # p 0.5 and 1 (default)
        # chains of 1-3 ops drawn with weights p (an op without a rate still takes draws)
        {"select": [1, 3], "ops": {"blur": {"p": 0.5}, "text": {"p": 1.5}, "unmeasured": {}}},
    ]
    got = share.expected_costs(stages, rates)
    # chain: mean length (1 + 3) / 2 = 2, weights 0.5, 1.5 and 1.0 (default p) of 3.0
    assert got == pytest.approx(
        {
            "crop": 0.5 / 1000,
            "hflip": 1 / 2000,
            "blur": 2 * (0.5 / 3) / 500,
            "text": 2 * (1.5 / 3) / 100,
        }
    )
