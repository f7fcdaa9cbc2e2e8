"""Gathering embeddings from every rank, with gradients flowing back to their owners."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order), differentiably.

    Uses ``torch.distributed.nn.all_gather``, whose backward sums the incoming gradients
    of each slice on its owning rank; every rank must pass the same shape.
    """
    _, world_size = world()
    if world_size == 1:
        return x
    from torch.distributed.nn import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (e.g. labels) from all ranks along dim 0, without gradients."""
    _, world_size = world()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
