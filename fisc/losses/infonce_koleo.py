"""InfoNCE with a KoLeo (differential entropy) regulariser, as in SSCD.

Each embedding's positives are the other embeddings of the same instance (the other view
of the same image); every other embedding in the global batch is a negative. Embeddings
from all ranks are gathered differentiably, so negatives span the whole global batch.

Mixed positives (SSCD's mixup/cutmix, ``mix_fraction > 0``): :meth:`InfoNCEKoLeoLoss.extra_views`
adds ``round(mix_fraction * n)`` mixed images to a batch of ``n`` images
(:func:`fisc.losses.mix.mix_images`). Rows marked as mixed images of instances ``A``
(weight ``λ``) and ``B`` (``1 - λ``) are anchors only. Their target puts ``λ`` on the views
of ``A`` and ``1 - λ`` on the views of ``B`` (split evenly over each instance's views); they
are left out of every other row's candidates and of the KoLeo term.

Cross-batch memory (``memory_size > 0``, :mod:`fisc.losses.memory`): the last ``memory_size``
unmixed embeddings of past global batches join every row's softmax as extra negatives (SSCD's
result rests on a 4096 batch; a small CPU batch sees few negatives). Remembered views of a
row's own instance (or of a mixed row's partner) are left out rather than counted as
positives, since they come from an older model. ``pos_top1`` and KoLeo stay over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fisc.losses.base import ExtraViews
from fisc.losses.gather import gather_no_grad, gather_with_grad, world
from fisc.losses.memory import CrossBatchMemory
from fisc.losses.mix import mix_images


@dataclass
class InfoNCEKoLeoOutput:
    loss: torch.Tensor
    infonce: torch.Tensor
    koleo: torch.Tensor
    positive_rank_accuracy: torch.Tensor  # fraction of rows whose best match is a positive

    def logs(self) -> dict[str, torch.Tensor]:
        return {
            "infonce": self.infonce,
            "koleo": self.koleo,
            "pos_top1": self.positive_rank_accuracy,
        }


class InfoNCEKoLeoLoss(CrossBatchMemory):
    """``loss = InfoNCE(τ) + λ · KoLeo``, averaged over the global batch.

    ``forward(embeddings, instance_ids)`` takes this rank's L2-normalised embeddings
    ``(n, d)`` and their instance ids ``(n,)`` (globally unique per source image). The
    returned loss is the mean over this rank's rows of terms computed against the global
    batch; averaging it over ranks (as DDP does with gradients) gives the loss of the
    concatenated batch.
    """

    def __init__(
        self,
        temperature: float = 0.05,
        entropy_weight: float = 10.0,
        eps: float = 1e-8,
        memory_size: int = 0,
        memory_warmup: int = 0,
        mix_fraction: float = 0.0,
        mix_alpha: float = 1.0,
        cutmix_prob: float = 0.5,
    ):
        """``mix_fraction``: mixed images added per batch, as a fraction of the batch; each is
        a mixup (``λ ~ Beta(mix_alpha, mix_alpha)``) or, with probability ``cutmix_prob``, a
        cutmix of two of the batch's second views."""
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.eps = eps
        self.mix_fraction, self.mix_alpha, self.cutmix_prob = mix_fraction, mix_alpha, cutmix_prob
        self._init_memory(memory_size, memory_warmup)

    def extra_views(self, view_b: torch.Tensor, index: torch.Tensor) -> ExtraViews | None:
        """SSCD's mixed positives: ``round(mix_fraction * n)`` images made from pairs of second
        views, anchors whose targets are both sources; ``None`` when there are none."""
        n = view_b.shape[0]
        count = int(round(self.mix_fraction * n))
        if not count:
            return None
        mixed, primary, partner, lam = mix_images(
            view_b, index, count, self.mix_alpha, self.cutmix_prob
        )
        none = torch.full_like(index, -1)  # the two views' rows are not mixed
        return ExtraViews(
            mixed,
            primary,
            {
                "mix_partner": torch.cat([none, none, partner]),
                "mix_lam": torch.cat([torch.ones(2 * n, device=lam.device), lam.float()]),
            },
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        instance_ids: torch.Tensor,
        mix_partner: torch.Tensor | None = None,
        mix_lam: torch.Tensor | None = None,
    ) -> InfoNCEKoLeoOutput:
        """``mix_partner`` (``(n,)`` instance ids, ``-1`` for unmixed rows) and ``mix_lam``
        (``(n,)``, weight of ``instance_ids``) mark mixed-image rows; default: none."""
        rank, _ = world()
        n = embeddings.shape[0]
        dev = embeddings.device
        if mix_partner is None:
            mix_partner = torch.full_like(instance_ids, -1)
            mix_lam = torch.ones(n, dtype=embeddings.dtype, device=dev)
        mixed = mix_partner >= 0
        all_emb = gather_with_grad(embeddings)
        all_ids = gather_no_grad(instance_ids)
        all_mixed = gather_no_grad(mixed)
        offset = rank * n  # every rank contributes the same number of rows
        rows = torch.arange(n, device=dev) + offset

        sim = embeddings @ all_emb.T  # (n, N) cosine similarities
        is_self = torch.zeros_like(sim, dtype=torch.bool)
        is_self[torch.arange(n), rows] = True
        excluded = is_self | all_mixed[None, :]  # mixed images are anchors only
        same = instance_ids[:, None] == all_ids[None, :]
        positive = same & ~excluded
        partner = (mix_partner[:, None] == all_ids[None, :]) & ~excluded & mixed[:, None]
        if not bool(positive.any(dim=1).all()):
            raise ValueError("every embedding needs at least one positive (another view)")
        if bool((mixed & ~partner.any(dim=1)).any()):
            raise ValueError("every mixed image needs a view of its partner in the batch")

        logits = (sim / self.temperature).masked_fill(excluded, float("-inf"))
        memory = self.memory()
        if memory is not None:  # extra negatives: every remembered other instance
            mem_emb, mem_ids = memory
            own = (mem_ids[None, :] == instance_ids[:, None]) | (
                mem_ids[None, :] == mix_partner[:, None]
            )
            mem_logits = (embeddings @ mem_emb.to(sim.dtype).T / self.temperature).masked_fill(
                own, float("-inf")
            )
            norm = torch.logsumexp(torch.cat([logits, mem_logits], dim=1), dim=1, keepdim=True)
        else:
            norm = torch.logsumexp(logits, dim=1, keepdim=True)
        log_prob = (logits - norm).masked_fill(excluded, 0.0)
        lam = mix_lam.to(sim.dtype)
        target = positive * (lam / positive.sum(1))[:, None]
        target = target + partner * ((1 - lam) / partner.sum(1).clamp(min=1))[:, None]
        infonce = -(target * log_prob).sum(1).mean()

        # KoLeo over the unmixed rows: -mean log distance to the nearest other instance.
        dist2 = (2.0 - 2.0 * sim).masked_fill(same | all_mixed[None, :], float("inf"))
        nearest = dist2[~mixed].min(dim=1).values.clamp(min=0.0)
        koleo = -torch.log(torch.sqrt(nearest + self.eps**2) + self.eps).mean()

        best = sim.masked_fill(excluded, float("-inf")).argmax(dim=1)
        accuracy = positive[torch.arange(n), best][~mixed].float().mean()
        self._enqueue(all_emb[~all_mixed].detach(), all_ids[~all_mixed])
        return InfoNCEKoLeoOutput(infonce + self.entropy_weight * koleo, infonce, koleo, accuracy)
