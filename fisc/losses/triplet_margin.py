"""Triplet margin loss with batch-hard mining over the two views (an example loss).

Each row (a view) is an anchor; its positive is the farthest other row of its own image (with
two views per image: the other view), its negative the nearest row of another image in the
global batch. The cost is ``relu(d(a, p) - d(a, n) + margin)`` on L2 distances between the
L2-normalised embeddings, averaged over this rank's rows; with the same number of rows on every
rank, DDP's gradient average is the gradient of the whole global batch's loss.

``docs/architecture.md`` (Adding a loss) walks through how this loss was added: this module,
``conf/loss/triplet_margin.yaml`` and ``tests/losses/test_triplet_margin.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fisc.losses.base import TrainingLoss
from fisc.losses.gather import gather_no_grad, gather_with_grad, world


@dataclass
class TripletOutput:
    loss: torch.Tensor
    active: torch.Tensor  # fraction of anchors whose triplet is inside the margin

    def logs(self) -> dict[str, torch.Tensor]:
        return {"active_triplets": self.active}


class TripletMarginLoss(TrainingLoss):
    def __init__(self, margin: float = 0.2):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, instance_ids: torch.Tensor) -> TripletOutput:
        rank, _ = world()
        n = embeddings.shape[0]
        all_emb = gather_with_grad(embeddings)
        all_ids = gather_no_grad(instance_ids)
        d = torch.sqrt((2.0 - 2.0 * embeddings @ all_emb.T).clamp(min=0.0) + 1e-12)
        is_self = torch.zeros_like(d, dtype=torch.bool)
        is_self[torch.arange(n), torch.arange(n) + rank * n] = True
        same = (instance_ids[:, None] == all_ids[None, :]) & ~is_self
        if not bool(same.any(dim=1).all()):
            raise ValueError("every embedding needs at least one positive (another view)")
        hardest_pos = d.masked_fill(~same, float("-inf")).max(dim=1).values
        other = instance_ids[:, None] != all_ids[None, :]
        hardest_neg = d.masked_fill(~other, float("inf")).min(dim=1).values
        cost = torch.relu(hardest_pos - hardest_neg + self.margin)
        return TripletOutput(cost.mean(), (cost > 0).float().mean())
