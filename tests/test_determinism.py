"""Deterministic kernels for a block of code (fisc.determinism): set, then restored."""

from __future__ import annotations


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
