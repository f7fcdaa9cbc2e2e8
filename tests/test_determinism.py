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


def test_deterministic_kernels_with_per_backend_precision_settings():
    """A caller that set TF32 through torch's per-backend API (reading the old global setting
    then raises): the block still runs, in full float32, and the setting is restored."""
    import pytest
    import torch

    from fisc.determinism import deterministic_kernels

    matmuls = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    if not all(hasattr(m, "fp32_precision") for m in matmuls):
        pytest.skip("torch without per-backend float32 precision settings")
    saved = [m.fp32_precision for m in matmuls]
    try:
        matmuls[0].fp32_precision = "tf32"
        with deterministic_kernels():
            assert [m.fp32_precision for m in matmuls] == ["ieee", "ieee"]
            assert torch.are_deterministic_algorithms_enabled()
        assert [m.fp32_precision for m in matmuls] == ["tf32", saved[1]]
    finally:
        for m, value in zip(matmuls, saved, strict=True):
            m.fp32_precision = value
