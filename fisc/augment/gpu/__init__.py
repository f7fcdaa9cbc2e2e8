"""Batched GPU ops, one registered class per op family, mirroring :mod:`fisc.augment.ops`
(protocol in :mod:`fisc.augment.gpu.base`; ``photometric``, ``geometric`` and ``overlay`` hold
the ops, ``pipeline`` runs them in turn).

Importing this package fills the GPU side of the op registry
(:data:`fisc.augment.registry.REGISTRY`; :data:`GPU_OPS` is its GPU view) and, through
:mod:`fisc.augment.ops`, the CPU side: the whole registry. A config names an op the same way on
both sides; ``blur`` in a view's ``gpu`` stage is the GPU implementation of ``blur``::

    from fisc.augment.gpu import build_gpu_pipeline
    pipe = build_gpu_pipeline({"color_jitter": {"p": 0.8}, "blur": {"p": 0.3}})
    out = pipe(x, seeds)   # (B, 3, H, W) float in [0, 1], (B,) int seeds; same shape out
"""

import fisc.augment.ops  # noqa: F401 (the CPU side of the registry)
from fisc.augment.gpu import geometric, overlay, photometric  # noqa: F401 (fill the registry)
from fisc.augment.gpu.base import (
    CPU_CHUNK,
    GPU_OPS,
    GpuOp,
    OpConfigError,
    Param,
    build_gpu_op,
    mix_seed,
    register,
)
from fisc.augment.gpu.pipeline import GpuPipeline, build_gpu_pipeline

__all__ = [
    "CPU_CHUNK",
    "GPU_OPS",
    "GpuOp",
    "GpuPipeline",
    "OpConfigError",
    "Param",
    "build_gpu_op",
    "build_gpu_pipeline",
    "mix_seed",
    "register",
]
