"""Tiled exact L2 k-NN in torch (CPU or CUDA), memory bounded by the tile sizes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fisc.determinism import full_float32_products


def _k_smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` smallest values of ``d`` and their column positions, in position
    order; among values equal to the k-th smallest, the lowest positions are kept (torch.topk
    picks any of them). ``d`` has no NaN."""
    n, m = d.shape
    if k >= m:
        return d, torch.arange(m, device=d.device).expand(n, m)
    td, ti = torch.topk(d, k, dim=1, largest=False, sorted=False)
    kth = td.max(dim=1, keepdim=True).values
    # only rows with more than k values <= their k-th smallest have a choice among ties
    tied = torch.nonzero((d <= kth).sum(dim=1) > k).flatten()
    if tied.numel():
        sub, sub_kth = d[tied], kth[tied]
        below, equal = sub < sub_kth, sub == sub_kth
        room = k - below.sum(dim=1, keepdim=True)
        keep = below | (equal & (torch.cumsum(equal, dim=1) <= room))
        ti[tied] = keep.nonzero()[:, 1].view(-1, k)  # exactly k per row, in row-major order
    ti, _ = torch.sort(ti, dim=1)
    return torch.gather(d, 1, ti), ti


@torch.no_grad()
@full_float32_products()  # no TF32/bf16 products a caller may have enabled: see its docstring
def torch_knn(
    q: np.ndarray,
    r: np.ndarray,
    k: int,
    device: str | torch.device = "cpu",
    query_tile: int = 4096,
    ref_tile: int = 16384,
    on_tile: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest references of each query by squared L2; inputs already validated.

    Distances are ``||q||² + ||r||² − 2 q·r`` clamped at 0, computed in float32 one
    ``query_tile × ref_tile`` block at a time (4 bytes each: 256 MiB with the defaults, beside
    the references themselves); a running top-k is merged over reference tiles.
    Returns numpy ``(dist2 float32 [n_q, k], idx int64 [n_q, k])``, rows sorted ascending by
    distance then index; among references at the same distance the lower indices are the ones
    retained (as faiss's flat index does), whatever the tiling. ``on_tile(pairs)`` is called
    after each block with its number of (query, reference) pairs (progress).
    """
    if query_tile < 1 or ref_tile < 1:
        raise ValueError("query_tile and ref_tile must be >= 1")
    device = torch.device(device)
    n_q, n_r = q.shape[0], r.shape[0]
    k = min(k, n_r)
    rt = torch.as_tensor(r, device=device)
    r_norm = (rt * rt).sum(dim=1)
    out_d = np.empty((n_q, k), np.float32)
    out_i = np.empty((n_q, k), np.int64)
    for q0 in range(0, n_q, query_tile):
        qb = torch.as_tensor(q[q0 : q0 + query_tile], device=device)
        q_norm = (qb * qb).sum(dim=1, keepdim=True)
        best_d = torch.empty((qb.shape[0], 0), dtype=torch.float32, device=device)
        best_i = torch.empty((qb.shape[0], 0), dtype=torch.int64, device=device)
        for r0 in range(0, n_r, ref_tile):
            rb = rt[r0 : r0 + ref_tile]
            # d = ||r||² − 2 q·r + ||q||², one allocation per tile
            d = torch.addmm(r_norm[r0 : r0 + ref_tile].unsqueeze(0), qb, rb.T, beta=1.0, alpha=-2.0)
            d.add_(q_norm).clamp_(min=0.0)
            td, ti = _k_smallest(d, k)
            best_d = torch.cat([best_d, td], dim=1)
            best_i = torch.cat([best_i, ti + r0], dim=1)  # ascending: earlier tiles first
            if best_d.shape[1] > k:
                best_d, sel = _k_smallest(best_d, k)
                best_i = torch.gather(best_i, 1, sel)
            if on_tile is not None:
                on_tile(qb.shape[0] * rb.shape[0])
        # sort by (distance, index): stable sort on index, then stable sort on distance
        best_i, perm = torch.sort(best_i, dim=1, stable=True)
        best_d = torch.gather(best_d, 1, perm)
        best_d, perm = torch.sort(best_d, dim=1, stable=True)
        best_i = torch.gather(best_i, 1, perm)
        out_d[q0 : q0 + qb.shape[0]] = best_d.cpu().numpy()
        out_i[q0 : q0 + qb.shape[0]] = best_i.cpu().numpy()
    return out_d, out_i
