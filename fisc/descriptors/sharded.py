"""Extraction over several ranks: each rank streams a shard keyed by dataset index to disk;
one rank merges the shards, de-duplicating the indices the distributed sampler repeated to
pad, into a working file in id order. Nothing holds all descriptors in memory.

Under any launcher that initialises ``torch.distributed`` (Lightning DDP, torchrun, spawn):

    shard = extract_shard(model, images, prep, shard_dir)      # on every rank
    dist.barrier()
    if rank == 0: merge_shards(sorted(shard_dir.glob("shard-*.h5")), images, out_path)

:func:`extract_distributed` does all of it, process group included (``fisc extract`` under
torchrun).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import Preprocess
from fisc.descriptors.extract import iter_descriptors
from fisc.descriptors.h5io import ascii_ids, read_attrs, read_vectors, write_vectors
from fisc.files import atomic_path

CHUNK = 65_536  # rows per read while merging


def rank_indices(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's indices, as ``DistributedSampler(shuffle=False)`` gives them: strided, and
    padded with repeats of the first indices so every rank has ``ceil(n / world)``."""
    per_rank = math.ceil(n / world_size)
    padded = list(range(n)) + list(range(per_rank * world_size - n))
    return padded[rank::world_size]


def extract_shard(
    model: nn.Module,
    images: ImageSet,
    prep: Preprocess,
    shard_dir: str | Path,
    rank: int | None = None,
    world_size: int | None = None,
    **kwargs,
) -> Path:
    """Write this rank's shard (``index`` int64, ``vectors`` float32) batch by batch."""
    if rank is None or world_size is None:
        initialised = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if initialised else 0
        world_size = dist.get_world_size() if initialised else 1
    indices = rank_indices(len(images), rank, world_size)
    path = Path(shard_dir) / f"shard-{rank:05d}-of-{world_size:05d}.h5"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        idx_ds = vec_ds = None
        for index, vectors in iter_descriptors(model, images, prep, indices, **kwargs):
            if vec_ds is None:
                d = vectors.shape[1]
                idx_ds = f.create_dataset(
                    "index", (0,), dtype="i8", maxshape=(None,), chunks=(4096,)
                )
                vec_ds = f.create_dataset(
                    "vectors", (0, d), dtype="f4", maxshape=(None, d), chunks=(min(4096, CHUNK), d)
                )
            n0 = idx_ds.shape[0]
            idx_ds.resize((n0 + len(index),))
            vec_ds.resize((n0 + len(index), vec_ds.shape[1]))
            idx_ds[n0:] = index
            vec_ds[n0:] = vectors
        f.attrs["rank"], f.attrs["world_size"] = rank, world_size
        f.attrs["n_images"] = len(images)
    return path


def merge_shards(shards: Sequence[str | Path], images: ImageSet, out: str | Path) -> Path:
    """Merge shards into a working file (``vectors``, ``image_names``) in id order. Repeated
    indices (sampler padding) must carry identical vectors; images no shard covers are left
    out (undecodable, skipped) and listed in the ``missing`` attribute."""
    n = len(images)
    d = None
    for s in shards:
        with h5py.File(s, "r") as f:
            if "vectors" in f:
                d = f["vectors"].shape[1]
                break
    if d is None:
        raise ValueError(f"no descriptors in shards {list(map(str, shards))}")
    covered = np.zeros(n, dtype=bool)
    fd, staging = tempfile.mkstemp(prefix=".merge-", suffix=".h5", dir=Path(out).parent)
    os.close(fd)
    try:
        with h5py.File(staging, "w") as f:
            full = f.create_dataset("vectors", (n, d), dtype="f4")
            for s in shards:
                with h5py.File(s, "r") as shard:
                    if shard.attrs.get("n_images") != n:
                        raise ValueError(f"{s} was extracted from another image set")
                    if "index" not in shard:
                        continue
                    for start in range(0, shard["index"].shape[0], CHUNK):
                        idx = shard["index"][start : start + CHUNK]
                        vec = shard["vectors"][start : start + CHUNK]
                        idx, first = np.unique(idx, return_index=True)  # sorted for h5py
                        vec = vec[first]
                        seen = covered[idx]
                        if seen.any() and not np.array_equal(full[idx[seen]], vec[seen]):
                            raise ValueError(f"{s}: repeated indices with different vectors")
                        full[idx] = vec
                        covered[idx] = True
        # rewrite in id order without the missing rows, streaming
        keep = np.flatnonzero(covered)
        with h5py.File(staging, "r") as src, atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            vectors = f.create_dataset("vectors", (len(keep), d), dtype="f4")
            for start in range(0, len(keep), CHUNK):
                rows = keep[start : start + CHUNK]
                vectors[start : start + len(rows)] = src["vectors"][rows]
            f.create_dataset("image_names", data=ascii_ids([images.ids[i] for i in keep]))
            f.attrs["missing"] = ascii_ids([images.ids[i] for i in np.flatnonzero(~covered)])
    finally:
        Path(staging).unlink(missing_ok=True)
    return Path(out)


def extract_distributed(
    pipeline,
    images: ImageSet,
    role: str,
    out: str | Path,
    labels: dict,
    batch_size: int = 64,
    num_workers: int = 2,
    on_error: str = "raise",
) -> int | None:
    """Extraction under a launcher that starts one process per rank (torchrun): set up the
    process group (NCCL on CUDA, else gloo), let every rank extract its shard of ``images``
    with the pipeline's model into ``<out>.shards``, and on rank 0 merge them into ``out``
    (with a post-processor: raw rows merged aside, then finalized in ``role``), labelled with
    ``labels``. Returns the number of shards merged on rank 0, ``None`` on the others."""
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    shard_dir = Path(f"{out}.shards")
    merged = None
    try:
        extract_shard(
            pipeline.model,
            images,
            pipeline.preprocess,
            shard_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            on_error=on_error,
            progress=rank == 0,
        )
        dist.barrier()
        if rank == 0:
            shards = sorted(shard_dir.glob("shard-*.h5"))
            if pipeline.postprocessor is None:
                merge_shards(shards, images, out)
            else:  # raw rows merged aside, post-processed (row by row) into --out
                staging = Path(f"{out}.raw.h5")
                merge_shards(shards, images, staging)
                missing = read_attrs(staging).get("missing")
                labels = dict(labels)
                if missing is not None:
                    labels["missing"] = missing
                final = pipeline.finalize(read_vectors(staging), role)
                write_vectors(out, final, attrs=labels)
                staging.unlink()
            for shard in shards:
                shard.unlink()
            shard_dir.rmdir()
            merged = len(shards)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return merged
