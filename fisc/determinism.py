"""Deterministic kernels: the same input gives the same bits, run after run (exports, and
training with ``deterministic=true``).

On CPU, fisc's exports are bit-identical run to run and however images are batched (one image
per forward pass, see ``iter_descriptors(per_image=True)``). On CUDA, cuDNN may pick
non-deterministic algorithms (``cudnn.benchmark``), TF32 matmuls round differently from
float32, and cuBLAS needs a fixed workspace to reduce in a fixed order; this context turns all
of that off, and makes torch raise on any op that has no deterministic implementation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def full_float32_products():
    """Float32 matrix products in full float32 (no TF32 or bfloat16 shortcut that a caller may
    have enabled) inside the block, the caller's settings restored after it (exact search
    relies on float32's rounding, :func:`fisc.search.backends.float32_error_terms`; exports on
    the same bits run to run). Set the way the caller set them: torch's global setting
    (``torch.set_float32_matmul_precision``), or, once a caller has used the per-backend
    settings (``torch.backends.<cuda|mkldnn>.matmul.fp32_precision``, after which reading the
    global one raises), those."""
    try:
        saved_global = torch.get_float32_matmul_precision()
    except RuntimeError:  # the per-backend settings are in use
        saved_global = None
    if saved_global is not None:
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved_global)
        return
    per_backend = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    saved = [m.fp32_precision for m in per_backend]
    try:
        for m in per_backend:
            m.fp32_precision = "ieee"
        yield
    finally:
        for m, value in zip(per_backend, saved, strict=True):
            m.fp32_precision = value


@contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """Within the block: ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and
    not benchmarking, no TF32, and a fixed cuBLAS workspace; everything restored after."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
        cudnn.allow_tf32,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = True, False, False
    # torch's deterministic mode also fills every new uninitialised tensor with NaN, a guard
    # against kernels that read memory they never wrote; no result depends on it, and it took
    # about a sixth of a CPU training step's time (perf, demo at 96 px)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        with full_float32_products():  # no TF32 matmuls either
            yield
    finally:
        algorithms, warn_only, cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = saved[:5]
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = saved[6]
        if saved[5] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[5]


@contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Within the block torch uses ``threads`` intra-op threads (``None``: unchanged); CPU
    reductions are split by thread, so bit-identical reruns need the same count."""
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    saved = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(saved)
