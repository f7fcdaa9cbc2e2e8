"""The GPU side of the op protocol (:class:`GpuOp`) and of the op registry (:data:`GPU_OPS`):
batched augmentation ops for image batches already on the device (GPU, or CPU tensors).

An op edits a ``(B, 3, H, W)`` float batch in ``[0, 1]``. Every random choice for sample ``i``
(whether the op fires, its magnitudes, its noise field, its boxes) is a function of
``(seeds[i], op position in the pipeline)`` only: never of the batch size, of the other samples
or of global RNG state. So a sample's view replays exactly, alone or inside any batch.

How: per sample, a CPU ``torch.Generator`` seeded with a hash of (seed, op index) draws one
vector of uniforms (first: fire or not; then the op's parameters, always all of them, so the
parameters do not depend on ``p``). The op maps those uniforms to parameter tensors on the CPU
(in float64, so matrices are the same on every device), moves them to the device in one
transfer and edits the firing samples of the batch at once with kornia. Pixel-level random fields
(noise) come from a per-sample ``torch.Generator`` on the batch's device: they replay on one
device but CPU and CUDA streams differ.

:class:`GpuOp` is the GPU side of the op protocol: names, parameters, ``p`` and their
validation are shared with the CPU ops (:class:`fisc.augment.registry.OpSpec`): an unknown op,
an unknown parameter or an out-of-range value raises :class:`OpConfigError` when the op is
built. ``@register`` files a class as the GPU implementation of its name in the one registry
(:data:`fisc.augment.registry.REGISTRY`); :data:`GPU_OPS` is its GPU view (name -> class).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from fisc.augment.registry import REGISTRY, OpConfigError, OpSpec, Param, register

__all__ = [
    "CPU_CHUNK",
    "GPU_OPS",
    "GpuOp",
    "OpConfigError",
    "Param",
    "build_gpu_op",
    "check_batch",
    "lerp",
    "mix_seed",
    "register",
]

_MASK64 = (1 << 64) - 1
CPU_CHUNK = 8  # samples edited together on CPU tensors (larger batches fall out of cache)


def mix_seed(seed: int, index: int, salt: int = 0) -> int:
    """A well-mixed 64-bit seed from a sample seed, an op index and a salt (splitmix64)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (int(index) + 1) * 0xD1B54A32D192ED03 + salt) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def lerp(u: Tensor, rng: tuple[float, float]) -> Tensor:
    """``rng[0]`` to ``rng[1]`` as ``u`` goes from 0 to 1."""
    return rng[0] + u * (rng[1] - rng[0])


class GpuOp(nn.Module, OpSpec):
    """Base class of GPU ops: subclasses set ``name``, ``params``, ``n_draws``, :meth:`sample`
    and :meth:`apply`. ``index`` (the op's position in its pipeline) is part of every sample's
    seed."""

    kind: ClassVar[str] = "gpu"
    n_draws: ClassVar[int] = 0  # uniforms per sample that sample() maps to parameters

    def __init__(self, p: float = 1.0, **kwargs: Any):
        nn.Module.__init__(self)
        OpSpec.__init__(self, p, **kwargs)
        self.index = 0

    def extra_repr(self) -> str:
        return f"p={self.p}, index={self.index}, {self.values}"

    # -- to implement ---------------------------------------------------------------------
    def sample(self, u: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        """Parameters of ``n`` samples from their uniforms ``u`` (``(n, n_draws)`` float64,
        CPU) for images of ``size`` (H, W): a dict of CPU tensors with leading dim ``n``."""
        return {}

    def apply(self, x: Tensor, prm: dict[str, Tensor], keys: list[int]) -> Tensor:
        """Edit every sample of ``x`` (the firing ones) with its parameters ``prm`` (on
        ``x.device``); ``keys`` are the samples' mixed seeds, for pixel-level random fields."""
        raise NotImplementedError

    # -- driver -----------------------------------------------------------------------------
    def draw(self, seeds: Tensor) -> tuple[list[bool], Tensor, list[int]]:
        """Per sample: whether the op fires, its ``n_draws`` uniforms, its mixed seed."""
        keys = [mix_seed(s, self.index) for s in seeds.tolist()]
        gen = torch.Generator()
        rows = []
        for key in keys:
            gen.manual_seed(key)
            rows.append(torch.rand(1 + self.n_draws, generator=gen, dtype=torch.float64))
        r = torch.stack(rows) if rows else torch.zeros(0, 1 + self.n_draws, dtype=torch.float64)
        return (r[:, 0] < self.p).tolist(), r[:, 1:], keys

    def edit(
        self, x: Tensor, idx: list[int], u: Tensor, keys: list[int], inplace: bool = False
    ) -> Tensor:
        """``x`` with rows ``idx`` edited, from the batch's draws ``u`` and ``keys``. CPU
        tensors go in chunks of ``CPU_CHUNK`` samples (cache-sized: 2-3x faster)."""
        prm = _to_device(self.sample(u[idx], (x.shape[-2], x.shape[-1])), x)
        step = CPU_CHUNK if x.device.type == "cpu" else len(idx)
        if len(idx) == x.shape[0] and len(idx) <= step:
            y = _clamp(self.apply(x, prm, keys), x)
            return x.copy_(y) if inplace else y.to(x.dtype)
        out = x if inplace else x.clone()
        for j in range(0, len(idx), step):
            part = idx[j : j + step]
            where = torch.tensor(part, device=x.device)
            sub = {k: v[j : j + step] for k, v in prm.items()}
            y = self.apply(out.index_select(0, where), sub, [keys[i] for i in part])
            out.index_copy_(0, where, y.clamp(0.0, 1.0).to(x.dtype))
        return out

    def forward(self, x: Tensor, seeds: Tensor) -> Tensor:
        check_batch(x, seeds)
        fire, u, keys = self.draw(seeds.detach().cpu())
        idx = [i for i, f in enumerate(fire) if f]
        return self.edit(x, idx, u, keys) if idx else x


def _clamp(y: Tensor, x: Tensor) -> Tensor:
    """``y`` clamped to [0, 1]: in place, unless it shares memory with the input ``x``."""
    shared = y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    return y.clamp(0.0, 1.0) if shared else y.clamp_(0.0, 1.0)


def check_batch(x: Tensor, seeds: Tensor) -> None:
    """A float ``(B, 3, H, W)`` batch and its ``(B,)`` integer seeds, else ValueError."""
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"expected a float (B, 3, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    if seeds.shape != (x.shape[0],) or seeds.is_floating_point():
        raise ValueError(f"expected ({x.shape[0]},) integer seeds, got {seeds.dtype} {seeds.shape}")


def _to_device(prm: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """Parameter tensors to ``x.device`` in one transfer (float32, or x's dtype if wider)."""
    if not prm:
        return {}
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    n = next(iter(prm.values())).shape[0]
    flat = torch.cat([v.reshape(n, -1).to(torch.float64) for v in prm.values()], dim=1)
    flat = flat.to(dtype).to(x.device)
    out, col = {}, 0
    for k, v in prm.items():
        width = v[0].numel() if n else 0
        out[k] = flat[:, col : col + width].reshape(v.shape)
        col += width
    return out


GPU_OPS = cast(Mapping[str, type[GpuOp]], REGISTRY.view("gpu"))  # name -> GPU op class


def build_gpu_op(name: str, cfg: Mapping[str, Any] | None = None) -> GpuOp:
    """A GPU op from its registry name and config (``p`` plus its parameters); an op with no
    GPU implementation raises :class:`OpConfigError` listing those that have one."""
    return cast(GpuOp, REGISTRY.build(name, "gpu", cfg))
