"""What every training loss gives the training step (:class:`TrainingLoss`).

A loss is one class, built from its ``conf/loss/<name>.yaml``: the yaml's ``_target_`` names
the class and its other keys (but ``name``, the option's label) are the constructor's keyword
arguments, checked against the constructor's type hints at start-up
(:func:`fisc.losses.loss_fields`). A constructor that names ``dims`` (the descriptor size) or
``num_classes`` (the number of training images) gets them from the run, not from the yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ExtraViews:
    """Images a loss adds to a training batch (e.g. SSCD's mixed images) beyond its two views:
    ``images`` ``(m, C, H, W)``, their instance ids ``(m,)``, and keyword arguments for the
    loss's ``forward`` covering every row of the batch (the two views' rows first)."""

    images: torch.Tensor
    ids: torch.Tensor
    loss_kwargs: dict[str, Any] = field(default_factory=dict)


class TrainingLoss(nn.Module):
    """Base of fisc's losses. ``forward(embeddings, instance_ids, **extra)`` takes this rank's
    embeddings ``(n, d)`` (rows ``[view_a; view_b; extra views]``) and returns an object with
    ``loss`` (a scalar tensor) and ``logs()`` (``{name: scalar}``, logged as ``train/<name>``).

    Parameters and buffers of a loss (e.g. ArcFace's class weights) are trained and saved with
    the model; buffers named in a class attribute ``RUN_STATE`` are run state (a resumed run
    keeps them, an ``init_from`` run starts without them).
    """

    def extra_views(self, view_b: torch.Tensor, index: torch.Tensor) -> ExtraViews | None:
        """Images to add to this batch, made from its second views ``view_b`` (instance ids
        ``index``); ``None`` (the default): none."""
        return None
