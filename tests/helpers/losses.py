"""Independent references for the loss tests (row by row, straight from the definitions) and
their inputs, shared by the files of ``tests/losses/``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def unit_rows(n, d, seed=0):
    """``n`` random L2-normalised rows of ``d`` dims, float64, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def mixed_reference(x, ids, partner, lam, tau, mem=(), mem_ids=()):
    """Row by row: unmixed columns only; target λ on the primary's views, 1-λ on the partner's;
    remembered embeddings of other instances (not the row's, nor its partner's) as negatives."""
    n = len(ids)
    cols = [j for j in range(n) if partner[j] < 0]
    total = 0.0
    for i in range(n):
        cand = [j for j in cols if j != i]
        denom = sum(math.exp(float(x[i] @ x[j]) / tau) for j in cand)
        denom += sum(math.exp(float(x[i] @ m) / tau) for m, k in zip(mem, mem_ids, strict=True)
                     if k not in (ids[i], partner[i]))  # fmt: skip
        logp = {j: float(x[i] @ x[j]) / tau - math.log(denom) for j in cand}
        pos = [j for j in cand if ids[j] == ids[i]]
        term = lam[i] * sum(logp[j] for j in pos) / len(pos)
        if partner[i] >= 0:
            part = [j for j in cand if ids[j] == partner[i]]
            term += (1 - lam[i]) * sum(logp[j] for j in part) / len(part)
        total -= term
    return total / n


def contrastive_reference(x, ids, mem, mem_ids, pm, nm):
    """The contrastive loss with margins ``pm`` (positives) and ``nm`` (negatives) over every
    other row of the batch and the remembered rows: mean of the non-zero positive costs plus
    mean of the non-zero negative costs."""
    pos, neg = [], []
    for i in range(len(ids)):
        cands = [(x[j], ids[j]) for j in range(len(ids)) if j != i]
        cands += list(zip(mem, mem_ids, strict=True))
        for y, k in cands:
            d = float((x[i] - y).norm())
            (pos if k == ids[i] else neg).append(
                max(0.0, d - pm) if k == ids[i] else max(0.0, nm - d)
            )
    mean = lambda v: sum(c for c in v if c > 0) / max(1, sum(1 for c in v if c > 0))  # noqa: E731
    return mean(pos) + mean(neg)
