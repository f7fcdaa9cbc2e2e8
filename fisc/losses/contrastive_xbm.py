"""Contrastive loss with margins and a cross-batch memory (ISC 2021 1st place).

With ``d = ||x - y||`` between L2-normalised embeddings, a positive pair (two views of one
image, or a view and a remembered embedding of the same image) costs ``relu(d - pos_margin)``
and a negative pair ``relu(neg_margin - d)`` (the 1st-place margins: 0 and 1). Each of the
two terms is averaged over the pairs whose cost is non-zero (as pytorch-metric-learning's
``AvgNonZeroReducer`` does), and the loss is their sum.

Pairs are every row of this rank against the global batch (gathered with gradients) and,
once it has filled past ``memory_warmup`` batches, a FIFO memory of the last ``memory_size``
global-batch embeddings (detached; identical on every rank since each enqueues the gathered
batch). The non-zero pair counts are summed over ranks, so DDP's gradient average equals the
gradient of the loss of the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fisc.losses.gather import gather_no_grad, gather_with_grad, world
from fisc.losses.memory import CrossBatchMemory


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    active_negatives: torch.Tensor  # fraction of negative pairs inside the margin

    def logs(self) -> dict[str, torch.Tensor]:
        return {
            "pos_loss": self.positive,
            "neg_loss": self.negative,
            "active_neg": self.active_negatives,
        }


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    _, world_size = world()
    if world_size > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


class ContrastiveXBMLoss(CrossBatchMemory):
    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        memory_size: int = 0,
        memory_warmup: int = 0,
    ):
        super().__init__()
        if pos_margin < 0 or neg_margin <= pos_margin:
            raise ValueError(f"need 0 <= pos_margin < neg_margin, got {pos_margin}, {neg_margin}")
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self._init_memory(memory_size, memory_warmup)

    def forward(self, embeddings: torch.Tensor, instance_ids: torch.Tensor) -> ContrastiveOutput:
        rank, _ = world()
        n = embeddings.shape[0]
        all_emb = gather_with_grad(embeddings)
        all_ids = gather_no_grad(instance_ids)
        is_self = torch.zeros(n, all_emb.shape[0], dtype=torch.bool, device=embeddings.device)
        is_self[torch.arange(n), torch.arange(n) + rank * n] = True
        candidates, cand_ids = all_emb, all_ids
        memory = self.memory()
        if memory is not None:
            candidates = torch.cat([all_emb, memory[0].to(all_emb.dtype)])
            cand_ids = torch.cat([all_ids, memory[1]])
            pad = torch.zeros(n, len(memory[1]), dtype=torch.bool, device=is_self.device)
            is_self = torch.cat([is_self, pad], dim=1)
        sq = (2.0 - 2.0 * embeddings @ candidates.T).clamp(min=0.0)
        d = torch.sqrt(sq + 1e-12)
        same = (instance_ids[:, None] == cand_ids[None, :]) & ~is_self
        other = (instance_ids[:, None] != cand_ids[None, :]) & ~is_self
        pos_cost = torch.relu(d - self.pos_margin) * same
        neg_cost = torch.relu(self.neg_margin - d) * other
        counts = torch.stack([(pos_cost > 0).sum(), (neg_cost > 0).sum(), other.sum()]).float()
        g_pos, g_neg, g_other = _global_sum(counts)
        _, world_size = world()
        positive = pos_cost.sum() * world_size / g_pos.clamp(min=1)
        negative = neg_cost.sum() * world_size / g_neg.clamp(min=1)
        self._enqueue(all_emb.detach(), all_ids)
        return ContrastiveOutput(
            positive + negative, positive, negative, g_neg / g_other.clamp(min=1)
        )
