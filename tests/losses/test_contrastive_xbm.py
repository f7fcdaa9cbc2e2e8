"""The contrastive loss with margins (fisc.losses.contrastive_xbm, ISC 2021 1st place) against
pytorch-metric-learning's; its cross-batch memory: ``test_memory.py``."""

from __future__ import annotations

import pytest
import torch
from helpers.losses import unit_rows

from fisc.losses.contrastive_xbm import ContrastiveXBMLoss


def test_contrastive_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    x = unit_rows(12, 4, seed=1).float()
    ids = torch.arange(6).repeat(2)
    ours = ContrastiveXBMLoss(pos_margin=0.0, neg_margin=1.0)(x, ids)
    theirs = pml.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)(x, ids)
    assert float(ours.loss) == pytest.approx(float(theirs), rel=1e-5)
