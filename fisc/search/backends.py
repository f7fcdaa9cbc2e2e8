"""The two exact k-NN backends behind one call, :func:`search_knn`: faiss (:func:`faiss_knn`)
and torch (:mod:`fisc.search.torch_knn`), each followed by the float64 refinement of the
retained distances (:func:`exact_dist2`) and a sort by (distance, reference index). Which
backend, tiles and progress bar: :mod:`fisc.search.exact`, which validates the inputs; the
CPU backend ``auto`` picks is timed on :func:`search_knn` (:mod:`fisc.search.choose`)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

# a last query tile shorter than this joins the one before: faiss scans small batches without
# BLAS (below 20 queries in older versions; below n_q·d = 128,000 in faiss 1.15)
FAISS_MIN_TILE = 20


def query_tiles(n_q: int, tile: int, min_tile: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive query tiles of ``tile`` rows; a last tile shorter than
    ``min_tile`` is merged into the one before it."""
    bounds = list(range(0, n_q, tile)) + [n_q]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_tile:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def faiss_knn(
    q: np.ndarray,
    r: np.ndarray,
    k: int,
    device="cpu",
    query_tile: int | None = None,
    on_tile: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest references, ``query_tile`` queries at a time (all at once when None);
    ``on_tile(pairs)`` is called after each tile with its number of (query, reference) pairs."""
    import faiss

    resources = None
    if str(device) == "cpu":
        index = faiss.IndexFlatL2(r.shape[1])
    else:  # faiss-gpu: exact flat index on the device named by `device` (cuda[:N])
        resources = faiss.StandardGpuResources()  # must outlive the search below
        config = faiss.GpuIndexFlatConfig()
        config.device = int(str(device).split(":")[1]) if ":" in str(device) else 0
        index = faiss.GpuIndexFlatL2(resources, r.shape[1], config)
    index.add(r)
    dist = np.empty((q.shape[0], k), np.float32)
    idx = np.empty((q.shape[0], k), np.int64)
    for start, stop in query_tiles(q.shape[0], query_tile or q.shape[0], FAISS_MIN_TILE):
        d, i = index.search(q[start:stop], k)
        dist[start:stop], idx[start:stop] = d, i
        if on_tile is not None:
            on_tile((stop - start) * r.shape[0])
    del index, resources
    return dist, idx


def exact_dist2(q: np.ndarray, r: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``||q_i − r_idx[i,j]||²`` from explicit float64 differences (:func:`exact_pair_dist2`
    of every (row, neighbour) pair)."""
    n, k = idx.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    return exact_pair_dist2(q, r, rows, idx.ravel()).reshape(n, k)


def exact_pair_dist2(q: np.ndarray, r: np.ndarray, qi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    """``||q_qi[n] − r_ri[n]||²`` of each listed pair from explicit float64 differences, in
    chunks of at most 4 million differences."""
    out = np.empty(qi.shape[0], np.float32)
    step = max(1, 4_000_000 // q.shape[1])
    for s in range(0, qi.shape[0], step):
        diff = r[ri[s : s + step]].astype(np.float64)
        diff -= q[qi[s : s + step]]
        out[s : s + step] = np.einsum("bd,bd->b", diff, diff)
    return out


def float32_error_terms(d: int) -> tuple[float, float]:
    """``(c, a)`` such that ``|d32 − d| ≤ c·(‖q‖² + ‖r‖²) + a`` for any pair of
    ``d``-dimensional float32 vectors, where ``d`` is their exact squared distance and ``d32``
    what either backend ranks with: ``‖q‖² + ‖r‖² − 2 q·r`` or the sum of squared differences,
    evaluated in float32 (sums of ``d`` terms in any order, with or without fused multiply-add
    or the norm folded into the product's accumulation; clamped at 0, which only shrinks the
    error).

    Relative part (``Q = ‖q‖²``, ``R = ‖r‖²``, ``u = 2⁻²⁴``): a float32 sum of ``n`` terms errs
    by at most ``γ_n = n·u/(1 − n·u)`` times the sum of its absolute terms. The two norms err by
    at most ``γ_d (Q + R)``; the product ``2 q·r`` by ``2γ_(d+2) Σ|q_k r_k| ≤ γ_(d+2) (Q + R)``
    (``d + 2`` terms: a norm folded into the accumulation); the two final additions by ``u``
    times intermediates of at most about ``2(Q + R)`` each. The sum of squared differences errs
    by at most ``(γ_d + 3u) Σ(q_k − r_k)² ≤ (γ_d + 3u)·2(Q + R)``. Both are within
    ``(2γ_(d+2) + 8u)(Q + R)``.
    Absolute part, for results below float32's normal range (rounded to subnormals, or flushed
    to zero, inputs included): at most ``2⁻¹²⁶`` per operation, ``8d + 8`` operations.
    Both doubled for margin. Values whose squares overflow float32 are refused before
    (:func:`fisc.search.exact.check_descriptors`)."""
    u = 2.0**-24
    gamma = (d + 2) * u / (1 - (d + 2) * u)
    return 2.0 * (2 * gamma + 8 * u), 2.0 * (8 * d + 8) * 2.0**-126


def search_knn(
    q, r, k, backend, device, query_tile, ref_tile, refine, show: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN on validated float32 inputs with a resolved backend; k already ≤ n_r. ``show``: a
    progress bar on stderr, counting (query, reference) pairs."""
    from tqdm.auto import tqdm

    with tqdm(
        total=q.shape[0] * r.shape[0],
        desc=f"k-NN search ({q.shape[0]:,} x {r.shape[0]:,}, k={k})",
        unit=" pairs",
        unit_scale=True,
        file=sys.stderr,
        disable=not show,
    ) as bar:
        on_tile = bar.update if show else None
        if backend == "faiss":
            dist, idx = faiss_knn(q, r, k, device, query_tile, on_tile)
        else:
            from fisc.search.torch_knn import torch_knn

            dist, idx = torch_knn(
                q, r, k, device=device, query_tile=query_tile, ref_tile=ref_tile, on_tile=on_tile
            )
    if refine:
        dist = exact_dist2(q, r, idx)
    order = np.lexsort((idx, dist), axis=-1)  # per row: distance, then reference index
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
