"""ArcFace (fisc.losses.arcface, ISC 2021 2nd place) against pytorch-metric-learning's, and
its class head growing and loading smaller heads."""

from __future__ import annotations

import math

import pytest
import torch

from fisc.losses.arcface import ArcFaceLoss


def test_arcface_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 2])
    ours = ArcFaceLoss(7, 5, margin=0.4, scale=40.0)
    theirs = pml.ArcFaceLoss(7, 5, margin=math.degrees(0.4), scale=40.0)
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    assert float(ours(x, labels).loss) == pytest.approx(float(theirs(x, labels)), rel=1e-4)


def test_arcface_grows_its_classes_and_loads_smaller_heads():
    torch.manual_seed(0)
    small = ArcFaceLoss(5, 4)
    big = ArcFaceLoss(9, 4)
    big.load_state_dict(small.state_dict())
    assert torch.equal(big.weight[:5], small.weight)
    kept = small.weight.detach().clone()
    small.grow(8)
    assert small.num_classes == 8 and torch.equal(small.weight[:5], kept)
    with pytest.raises(ValueError, match="grow"):
        ArcFaceLoss(3, 4)(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shrink"):
        small.grow(4)
