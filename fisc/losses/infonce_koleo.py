"""InfoNCE with a KoLeo (differential entropy) regulariser, as in SSCD.

Each embedding's positives are the other embeddings of the same instance (the other view
of the same image); every other embedding in the global batch is a negative. Embeddings
from all ranks are gathered differentiably, so negatives span the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fisc.losses.gather import gather_no_grad, gather_with_grad, world


@dataclass
class InfoNCEKoLeoOutput:
    loss: torch.Tensor
    infonce: torch.Tensor
    koleo: torch.Tensor
    positive_rank_accuracy: torch.Tensor  # fraction of rows whose best match is a positive


class InfoNCEKoLeoLoss(nn.Module):
    """``loss = InfoNCE(τ) + λ · KoLeo``, averaged over the global batch.

    ``forward(embeddings, instance_ids)`` takes this rank's L2-normalised embeddings
    ``(n, d)`` and their instance ids ``(n,)`` (globally unique per source image). The
    returned loss is the mean over this rank's rows of terms computed against the global
    batch; averaging it over ranks (as DDP does with gradients) gives the loss of the
    concatenated batch.
    """

    def __init__(self, temperature: float = 0.05, entropy_weight: float = 10.0, eps: float = 1e-8):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.eps = eps

    def forward(self, embeddings: torch.Tensor, instance_ids: torch.Tensor) -> InfoNCEKoLeoOutput:
        rank, _ = world()
        n = embeddings.shape[0]
        all_emb = gather_with_grad(embeddings)
        all_ids = gather_no_grad(instance_ids)
        offset = rank * n  # every rank contributes the same number of rows
        rows = torch.arange(n, device=embeddings.device) + offset

        sim = embeddings @ all_emb.T  # (n, N) cosine similarities
        is_self = torch.zeros_like(sim, dtype=torch.bool)
        is_self[torch.arange(n), rows] = True
        positive = (instance_ids[:, None] == all_ids[None, :]) & ~is_self
        if not bool(positive.any(dim=1).all()):
            raise ValueError("every embedding needs at least one positive (another view)")

        logits = (sim / self.temperature).masked_fill(is_self, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)
        infonce = -pos_log_prob.mean()

        # KoLeo: -mean log distance to the nearest other-instance embedding.
        same_instance = instance_ids[:, None] == all_ids[None, :]
        dist2 = (2.0 - 2.0 * sim).masked_fill(same_instance, float("inf"))
        nearest = dist2.min(dim=1).values.clamp(min=0.0)
        koleo = -torch.log(torch.sqrt(nearest + self.eps**2) + self.eps).mean()

        best = sim.masked_fill(is_self, float("-inf")).argmax(dim=1)
        accuracy = positive[torch.arange(n), best].float().mean()
        return InfoNCEKoLeoOutput(infonce + self.entropy_weight * koleo, infonce, koleo, accuracy)
