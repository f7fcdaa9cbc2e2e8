"""ArcFace instance classification (ISC 2021 2nd place): one class per training image.

``logits = s · cos(θ_j)`` for every class ``j``, with the target's angle widened by the
additive margin ``m``: ``s · cos(θ_y + m)``; cross-entropy over the classes. The class
weights are a parameter ``(num_classes, dims)``, L2-normalised in the forward pass, so
DDP averages their gradients like any other parameter; each rank classifies its own rows.

The class set can grow (the 2nd place grew it from 25k to 1.5M images): :meth:`grow` keeps
the learnt rows and appends new ones, and a checkpoint with fewer classes loads into a larger
head (its rows are copied, the rest keep their initialisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fisc.losses.base import TrainingLoss


@dataclass
class ArcFaceOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor  # top-1 class accuracy (without the margin)

    def logs(self) -> dict[str, torch.Tensor]:
        return {"class_top1": self.accuracy}


class ArcFaceLoss(TrainingLoss):
    def __init__(self, num_classes: int, dims: int, margin: float = 0.4, scale: float = 40.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ArcFace needs >= 2 classes, got {num_classes}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2), got {margin}")
        self.margin, self.scale, self.dims = margin, scale, dims
        self.weight = nn.Parameter(self._init(num_classes, dims))
        self._register_load_state_dict_pre_hook(self._grow_on_load)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @staticmethod
    def _init(num_classes: int, dims: int) -> torch.Tensor:
        return F.normalize(torch.randn(num_classes, dims), dim=1)

    @torch.no_grad()
    def grow(self, num_classes: int) -> None:
        """Extend the class set to ``num_classes``; existing rows are kept."""
        if num_classes < self.num_classes:
            raise ValueError(f"cannot shrink ArcFace from {self.num_classes} to {num_classes}")
        if num_classes == self.num_classes:
            return
        extra = self._init(num_classes - self.num_classes, self.dims).to(self.weight)
        self.weight = nn.Parameter(torch.cat([self.weight.data, extra]))

    def _grow_on_load(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "weight")
        if saved is not None and saved.shape[0] < self.num_classes:
            merged = self.weight.detach().clone()
            merged[: saved.shape[0]] = saved
            state_dict[prefix + "weight"] = merged

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> ArcFaceOutput:
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise ValueError(
                f"labels must be in [0, {self.num_classes}): grow() the class set first"
            )
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        with_margin = torch.cos(torch.acos(target) + self.margin)
        logits = cos.scatter(1, labels[:, None], with_margin) * self.scale
        loss = F.cross_entropy(logits, labels)
        accuracy = (cos.argmax(dim=1) == labels).float().mean()
        return ArcFaceOutput(loss, accuracy)
