"""Running a function on several gloo processes (CPU), one per rank, each with an initialised
default process group; what each rank returns comes back to the test in rank order.

Used by the world-size tests of the losses: 2 gloo ranks must give the loss and gradients of
one process on the concatenated batch."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _rank_entry(
    rank: int, fn: Callable[..., Any], args: tuple, world_size: int, init_file: str, out_dir: str
) -> None:
    """One spawned process: join the gloo group, run ``fn(rank, *args)``, save its result to
    ``<out_dir>/rank<rank>.pt``, leave the group."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        result = fn(rank, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        # every rank done with its collectives before any tears its group down: a rank whose
        # peer closed the connection mid-teardown can abort in gloo's threads (seen once in CI:
        # "terminate called without an active exception", SIGABRT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_on_gloo_ranks(
    fn: Callable[..., Any], tmp_path: Path, *args: Any, world_size: int = 2
) -> list[Any]:
    """``fn(rank, *args)`` on ``world_size`` spawned processes joined over gloo (rendezvous
    through a file in ``tmp_path``); returns each rank's result (tensors, lists and dicts of
    them: loaded with ``weights_only=True``), rank 0 first. ``fn`` must be a module-level
    function (the spawned processes import it by name). A rank that raises fails the call."""
    torch.multiprocessing.spawn(
        _rank_entry,
        args=(fn, args, world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
    )
    return [
        torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)
    ]
