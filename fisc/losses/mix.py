"""Mixed positives (SSCD): mixup and cutmix images made from pairs of training images.

``mix_images(views, ids, count, ...)`` makes ``count`` new images, each from two images of the
batch: mixup blends them (``λ ~ Beta(α, α)``), cutmix pastes a box of the second into the
first (``λ`` = the first's remaining area). The loss treats a mixed image as a positive of
both sources, weighted ``λ`` and ``1 - λ`` (see InfoNCEKoLeoLoss).
"""

from __future__ import annotations

import torch


def mix_images(
    views: torch.Tensor,
    ids: torch.Tensor,
    count: int,
    alpha: float = 1.0,
    cutmix_prob: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mixed images (count, C, H, W), primary ids, partner ids, λ)`` from ``views``
    ``(n, C, H, W)`` whose rows belong to distinct instances ``ids``. Row ``i < count`` is
    mixed with row ``(i + 1) % n``. Randomness comes from torch's global generator (seeded
    per run by Lightning's ``seed_everything``)."""
    n = views.shape[0]
    if count <= 0:
        empty = ids[:0]
        return views[:0], empty, empty, views.new_zeros(0)
    if n < 2 or count > n:
        raise ValueError(f"cannot make {count} mixed images from a batch of {n}")
    first = torch.arange(count)
    second = (first + 1) % n
    lam = torch.distributions.Beta(alpha, alpha).sample((count,)).clamp(0.05, 0.95)
    use_cut = torch.rand(count) < cutmix_prob
    a, b = views[first.to(views.device)], views[second.to(views.device)]
    out = a.clone()
    h, w = views.shape[-2:]
    lam_out = lam.clone()
    for i in range(count):
        if use_cut[i]:
            side = (1 - float(lam[i])) ** 0.5
            # at least one row/column of each source survives
            ch, cw = min(max(1, round(h * side)), h - 1), min(max(1, round(w * side)), w - 1)
            y0 = int(torch.randint(0, h - ch + 1, (1,)))
            x0 = int(torch.randint(0, w - cw + 1, (1,)))
            out[i, :, y0 : y0 + ch, x0 : x0 + cw] = b[i, :, y0 : y0 + ch, x0 : x0 + cw]
            lam_out[i] = 1 - ch * cw / (h * w)
        else:
            out[i] = lam[i] * a[i] + (1 - lam[i]) * b[i]
    return out, ids[first.to(ids.device)], ids[second.to(ids.device)], lam_out.to(views.device)
