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
from torch import nn

from fisc.losses.gather import gather_no_grad, gather_with_grad, world


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


class ContrastiveXBMLoss(nn.Module):
    # run state, not weights: a new run started from these weights (init_from) leaves it out
    RUN_STATE = ("mem_emb", "mem_ids", "mem_steps")

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
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}")
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.memory_size, self.memory_warmup = memory_size, memory_warmup
        # saved in checkpoints, so a resumed run continues with its memory (not an empty one)
        self.register_buffer("mem_emb", torch.zeros(0))
        self.register_buffer("mem_ids", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mem_steps", torch.zeros((), dtype=torch.long))

    @property
    def steps(self) -> int:
        return int(self.mem_steps)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mem_emb", "mem_ids"):  # the memory's length varies: take the saved shape
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        missing = [n for n in self.RUN_STATE if prefix + n not in state_dict]
        for name in missing:  # a checkpoint from before the memory was saved: start empty
            state_dict[prefix + name] = getattr(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, embeddings: torch.Tensor, instance_ids: torch.Tensor) -> ContrastiveOutput:
        rank, _ = world()
        n = embeddings.shape[0]
        all_emb = gather_with_grad(embeddings)
        all_ids = gather_no_grad(instance_ids)
        is_self = torch.zeros(n, all_emb.shape[0], dtype=torch.bool, device=embeddings.device)
        is_self[torch.arange(n), torch.arange(n) + rank * n] = True
        candidates, cand_ids = all_emb, all_ids
        use_memory = self.memory_size > 0 and self.steps >= self.memory_warmup
        if use_memory and len(self.mem_ids):
            candidates = torch.cat([all_emb, self.mem_emb.to(all_emb.dtype)])
            cand_ids = torch.cat([all_ids, self.mem_ids])
            pad = torch.zeros(n, len(self.mem_ids), dtype=torch.bool, device=is_self.device)
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

    @torch.no_grad()
    def _enqueue(self, emb: torch.Tensor, ids: torch.Tensor) -> None:
        self.mem_steps += 1
        if self.memory_size == 0 or not self.training:
            return
        if self.mem_emb.numel() == 0:
            self.mem_emb = emb.new_zeros(0, emb.shape[1])
        self.mem_emb = torch.cat([emb, self.mem_emb])[: self.memory_size]
        self.mem_ids = torch.cat([ids, self.mem_ids.to(ids.device)])[: self.memory_size]
