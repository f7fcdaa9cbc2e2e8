"""Exact L2 nearest-neighbour search between query and reference descriptors.

Backends: ``"faiss"`` (``faiss.IndexFlatL2`` on CPU; ``GpuIndexFlatL2`` with faiss-gpu on a
CUDA ``device``), ``"torch"`` (tiled matmul, CPU or CUDA,
see :mod:`fisc.search.torch_knn`) and ``"auto"`` (torch on a GPU; on the CPU the backend
measured faster on this machine, once and cached, see :mod:`fisc.search.choose`). Both rank
candidates with float32 ``||q||² + ||r||² − 2 q·r``; the retained
neighbours' distances are then recomputed from explicit differences in float64 (``refine``),
so that near-duplicates (tiny distances) are not drowned in cancellation error, and each row is
re-sorted by (distance, reference index).

:func:`global_capped_search` is the leaderboard protocol's search: the ``cap`` closest
(query, reference) pairs over all queries pooled, exact however unevenly they spread over queries
and whatever the float32 rounding of the ranking distances (within the bound of
:func:`~fisc.search.backends.float32_error_terms`, which a test checks against both backends'
CPU searches); it refines only the pairs that can still be among the ``cap``.

Progress: a search of at least :data:`PROGRESS_MIN_PAIRS` (query, reference) distances shows a
tqdm bar on stderr, counting (query, reference) pairs (``progress=None``, the default);
``True`` always shows it, ``False`` never. The torch backend advances it after each
``query_tile x ref_tile`` block; faiss searches ``query_tile`` queries at a time (faiss's own
search works on blocks of 4,096 queries, so with the default tile the distances and neighbours
are those of one call, bit for bit) and advances it after each tile. Searching references in
chunks too would give faiss finer steps, but measured 1.7x slower on the busy 2-core build
machine, so a faiss search of at most ``query_tile`` queries shows a single step.
"""

from __future__ import annotations

import math

import numpy as np

from fisc.search.backends import exact_pair_dist2, float32_error_terms, search_knn

BACKENDS = ("auto", "faiss", "torch")
# searches with at least this many (query, reference) distances show a progress bar by default:
# about 1,000 x 100,000 (a second or more on a laptop CPU at 256 dims)
PROGRESS_MIN_PAIRS = 100_000_000
# a squared distance is at most 2 (‖q‖² + ‖r‖²): below 2^126 float32 holds it (max ~2^128)
SQUARED_NORM_MAX = 2.0**124


def check_descriptors(x, name: str) -> np.ndarray:
    """Validate a descriptor matrix and return it as C-contiguous float32 numpy."""
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} descriptors must be 2-D (n × d), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} descriptors are empty (shape {x.shape})")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} descriptors must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x.sum(axis=1, dtype=np.float64))  # NaN/inf in a row poisons its sum
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} descriptors: {rows.size} of {x.shape[0]} rows have non-finite "
            f"values (first rows: {rows[:5].tolist()})"
        )
    rows = overflowing_rows(x)
    if rows.size:
        raise ValueError(
            f"{name} descriptors: {rows.size} of {x.shape[0]} rows have squared norms above "
            f"{SQUARED_NORM_MAX:.1e}, where float32 distances overflow (first rows: "
            f"{rows[:5].tolist()}); scale the descriptors down"
        )
    return x


def overflowing_rows(x: np.ndarray) -> np.ndarray:
    """Indices of the finite rows of ``x`` whose squared norm exceeds :data:`SQUARED_NORM_MAX`
    (their float32 distances can overflow); rows with NaN or inf are not among them."""
    squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    return np.flatnonzero(np.isfinite(squares) & (squares > SQUARED_NORM_MAX))


def _check_pair(q, r) -> tuple[np.ndarray, np.ndarray]:
    q, r = check_descriptors(q, "query"), check_descriptors(r, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query dimension {q.shape[1]} != reference dimension {r.shape[1]}")
    return q, r


def _resolve_backend(backend: str, device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = str(device) == "cpu"
    if backend == "auto":
        if not on_cpu:
            return "torch"
        from fisc.search.choose import cpu_backend

        return cpu_backend()[0]
    if backend == "faiss" and not on_cpu and not _faiss_has_gpu():
        raise ValueError(
            f"this faiss build has no GPU support (pip install 'fisc[gpu]' for faiss-gpu); "
            f"use backend='torch' on {device}"
        )
    return backend


def _faiss_has_gpu() -> bool:
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _show_progress(progress: bool | None, n_q: int, n_r: int) -> bool:
    if progress is None:
        return n_q * n_r >= PROGRESS_MIN_PAIRS
    return bool(progress)


def _knn(
    q, r, k, backend, device, query_tile, ref_tile, refine, progress: bool | None = False
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN on validated float32 inputs with a resolved backend; k already ≤ n_r.
    ``progress``: see the module docstring."""
    show = _show_progress(progress, q.shape[0], r.shape[0])
    return search_knn(q, r, k, backend, device, query_tile, ref_tile, refine, show)


def knn(
    q,
    r,
    k: int,
    backend: str = "auto",
    device="cpu",
    query_tile: int = 4096,
    ref_tile: int = 16384,
    refine: bool = True,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest references (squared L2) of every query.

    Returns ``(dist2 float32 [n_q, k], idx int64 [n_q, k])``, each row ascending by distance
    then index. Tie rule, on both backends: when ``k`` cuts through references at the same
    ranking distance (exact duplicates), the lower indices are the ones kept. ``k`` larger
    than the number of references is clamped to it. ``device`` and the tile sizes apply to the
    torch backend, ``query_tile`` to faiss too; ``progress``: a bar on stderr (None: only for
    large searches, see the module docstring).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q, r = _check_pair(q, r)
    backend = _resolve_backend(backend, device)
    return _knn(q, r, min(k, r.shape[0]), backend, device, query_tile, ref_tile, refine, progress)


def per_query_search(
    q,
    r,
    k: int,
    backend: str = "auto",
    device="cpu",
    query_tile: int = 4096,
    ref_tile: int = 16384,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` neighbours per query, flattened: ``(qi, ri, dist2)`` ordered by query then distance."""
    dist, idx = knn(q, r, k, backend, device, query_tile, ref_tile, progress=progress)
    qi = np.repeat(np.arange(dist.shape[0], dtype=np.int64), dist.shape[1])
    return qi, idx.ravel(), dist.ravel()


def _sorted_pairs(qi, ri, dist, cap):
    order = np.lexsort((ri, qi, dist))[:cap]
    return qi[order], ri[order], dist[order]


def global_capped_search(
    q,
    r,
    cap: int,
    backend: str = "auto",
    device="cpu",
    query_tile: int = 4096,
    ref_tile: int = 16384,
    oversample: int = 4,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``cap`` closest (query, reference) pairs over all queries together.

    Returns ``(qi int64, ri int64, dist2 float32)`` sorted by distance, then query index, then
    reference index; distances are float64-refined (as :func:`knn` returns them). Exact: a
    query may contribute any number of pairs, and the float32 distances the backend ranks with
    decide nothing that their rounding could change
    (:func:`~fisc.search.backends.float32_error_terms`).

    Each query starts with ``k0 = oversample · ceil(cap / n_q)`` neighbours (the search costs
    about the same for any small k; with ``oversample = 1`` the pool is about ``cap`` long, so
    that most queries would be searched twice). Every pooled pair's float32 distance gives an
    upper and a lower bound on its exact distance (its own norms in the rounding bound), and a
    query's k-th float32 distance a lower bound on every pair it has not pooled (with
    ``‖r‖² ≤ 2‖q‖² + 2‖q − r‖²``, so that no reference's norm, however large, widens every
    query's margin). Let ``T`` be the ``cap``-th smallest upper bound in the pool: the ``cap``
    closest pairs are all exactly within ``T``. While a query's unpooled pairs may be within
    ``T`` (plus a few float32 steps: see :func:`_beyond`), it is searched again with twice its
    k. Once none is, only the pooled pairs whose lower bound is within that limit can be among
    the ``cap``, or tie with the last of them after rounding to float32; they alone are refined
    in float64 and sorted.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    q, r = _check_pair(q, r)
    backend = _resolve_backend(backend, device)
    n_q, n_r = q.shape[0], r.shape[0]

    def search(rows: np.ndarray | None, k: int, refine: bool = False):
        sub = q if rows is None else q[rows]
        return _knn(sub, r, k, backend, device, query_tile, ref_tile, refine, progress)

    if cap >= n_q * n_r:  # everything
        dist, idx = search(None, n_r, refine=True)
        qi = np.repeat(np.arange(n_q, dtype=np.int64), n_r)
        return _sorted_pairs(qi, idx.ravel(), dist.ravel(), cap)

    c, a = float32_error_terms(q.shape[1])
    q_norm = np.einsum("ij,ij->i", q, q, dtype=np.float64)
    r_norm = np.einsum("ij,ij->i", r, r, dtype=np.float64)
    r_max = float(r_norm.max())
    k0 = min(n_r, oversample * math.ceil(cap / n_q))
    dist, idx = search(None, k0)
    pool_q = np.repeat(np.arange(n_q, dtype=np.int64), k0)
    pool_r, pool_d = idx.ravel(), dist.ravel()
    k_of = np.full(n_q, k0, np.int64)  # current k of each query
    kth = dist[:, -1].copy()  # its k-th (largest retained) float32 distance

    def unpooled_lower() -> np.ndarray:
        """Per query, a lower bound on the exact distance of every pair it has not pooled
        (their float32 distances are at least its k-th): the better of the two bounds, with
        the largest reference norm and with ``‖r‖² ≤ 2‖q‖² + 2 d``."""
        k64 = kth.astype(np.float64)
        with_max = k64 - c * (q_norm + r_max) - a
        with_d = (k64 - 3 * c * q_norm - a) / (1 + 2 * c)
        return np.maximum(with_max, with_d)

    while True:
        # pool size >= n_q * k0 >= cap here, since cap < n_q * n_r
        slack = c * (q_norm[pool_q] + r_norm[pool_r]) + a
        upper = pool_d + slack
        limit = _beyond(float(np.partition(upper, cap - 1)[cap - 1]))
        grow = np.flatnonzero((unpooled_lower() <= limit) & (k_of < n_r))
        if grow.size == 0:
            break
        regrown = np.zeros(n_q, bool)
        regrown[grow] = True
        keep = ~regrown[pool_q]
        parts_q, parts_r, parts_d = [pool_q[keep]], [pool_r[keep]], [pool_d[keep]]
        for k_old in np.unique(k_of[grow]):
            rows = grow[k_of[grow] == k_old]
            k_new = int(min(n_r, 2 * k_old))
            dist, idx = search(rows, k_new)
            parts_q.append(np.repeat(rows, k_new))
            parts_r.append(idx.ravel())
            parts_d.append(dist.ravel())
            k_of[rows] = k_new
            kth[rows] = dist[:, -1]
        pool_q, pool_r, pool_d = (np.concatenate(p) for p in (parts_q, parts_r, parts_d))

    near = np.flatnonzero(pool_d - slack <= limit)  # holds the cap pairs with upper <= T
    qi, ri = pool_q[near], pool_r[near]
    return _sorted_pairs(qi, ri, exact_pair_dist2(q, r, qi, ri), cap)


def _beyond(upper: float) -> float:
    """A limit past ``upper`` such that any exact distance above it rounds to a float32 value
    above every exact distance up to ``upper``: 2⁻²¹ relative (more than two float32 steps for
    a normal value, which also covers the float64 arithmetic of the bounds) and four steps of
    the smallest subnormal (2⁻¹⁴⁹) for values at the bottom of the range. The ``cap``-th
    closest pair is exactly within ``upper``; a pair exactly beyond the limit comes after it
    in float32 too, not tied with it."""
    return upper * (1 + 2.0**-21) + 4 * 2.0**-149
