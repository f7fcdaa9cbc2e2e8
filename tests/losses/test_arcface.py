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
    out = ours(x, labels)
    assert float(out.loss) == pytest.approx(float(theirs(x, labels)), rel=1e-4)
    # top-1 class without the margin, counted by hand; logged as train/class_top1
    cos = (
        torch.nn.functional.normalize(x, dim=1)
        @ torch.nn.functional.normalize(ours.weight, dim=1).T
    )
    hits = sum(int(cos[i].argmax()) == int(labels[i]) for i in range(8))
    assert 0 < hits < 8 and float(out.accuracy) == hits / 8
    assert out.logs() == {"class_top1": out.accuracy}


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


def test_loading_a_smaller_head_keeps_the_new_rows_and_tells_classes_by_rows():
    torch.manual_seed(0)
    small = ArcFaceLoss(5, 12)  # more dims than classes: rows, not columns, are classes
    big = ArcFaceLoss(9, 12)
    new_rows = big.weight[5:].detach().clone()
    big.load_state_dict(small.state_dict())
    assert torch.equal(big.weight[:5], small.weight) and torch.equal(big.weight[5:], new_rows)
    # a state dict without the head (a checkpoint of the backbone only) leaves it as it was
    before = big.weight.detach().clone()
    assert big.load_state_dict({}, strict=False).missing_keys == ["weight"]
    assert torch.equal(big.weight, before)


def test_labels_must_be_classes_of_the_head():
    loss = ArcFaceLoss(3, 4)
    for bad in ([0, 3], [-1, 1]):
        with pytest.raises(ValueError, match=r"^labels must be in \[0, 3\): grow\(\) the class"):
            loss(torch.randn(2, 4), torch.tensor(bad))
    loss(torch.randn(2, 4), torch.tensor([0, 2]))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_embedding_on_its_class_axis_has_finite_gradients(sign):
    """cos = +1 or -1 exactly for the label's class: acos' slope is infinite there, so the
    cosines are kept inside (-1, 1) and the gradients stay finite."""
    torch.manual_seed(0)
    loss = ArcFaceLoss(4, 3, margin=0.3, scale=10.0).double()
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]]))
    x = (sign * torch.eye(3, dtype=torch.float64)[:2]).requires_grad_()
    out = loss(x, torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all()
    assert torch.isfinite(loss.weight.grad).all()


def test_class_count_and_margin_bounds():
    with pytest.raises(ValueError, match=r"^ArcFace needs >= 2 classes, got 1$"):
        ArcFaceLoss(1, 4)
    for margin in (-0.01, math.pi / 2, 1.6):
        with pytest.raises(ValueError, match=r"^margin must be in \[0, pi/2\), got "):
            ArcFaceLoss(3, 4, margin=margin)
    for margin in (0.0, 1.2, math.pi / 2 - 1e-6):
        assert ArcFaceLoss(2, 4, margin=margin).margin == margin


def test_class_rows_start_as_unit_vectors_and_grown_ones_too():
    torch.manual_seed(0)
    loss = ArcFaceLoss(5, 6)
    torch.testing.assert_close(loss.weight.norm(dim=1), torch.ones(5))
    loss.grow(9)
    torch.testing.assert_close(loss.weight.norm(dim=1), torch.ones(9))
