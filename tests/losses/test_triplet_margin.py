"""The triplet margin loss (batch-hard) against torch's own triplet loss on triplets mined by
hand, and trained from its config group (``loss=triplet_margin``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.config import tiny_overrides

from fisc.losses.triplet_margin import TripletMarginLoss
from fisc.train.run import train


def _mined_reference(
    x: torch.Tensor, ids: list[int], margin: float, reduction: str = "mean"
) -> torch.Tensor:
    """For each anchor, by brute force: the farthest same-image row, the nearest other-image
    row; then torch's ``triplet_margin_loss`` on those triplets."""
    pos, neg = [], []
    for i in range(len(ids)):
        dist = [float(torch.dist(x[i], x[j])) for j in range(len(ids))]
        same = [j for j in range(len(ids)) if j != i and ids[j] == ids[i]]
        other = [j for j in range(len(ids)) if ids[j] != ids[i]]
        pos.append(max(same, key=lambda j: dist[j]))
        neg.append(min(other, key=lambda j: dist[j]))
    return F.triplet_margin_loss(x, x[pos], x[neg], margin=margin, eps=0.0, reduction=reduction)


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.5])
def test_matches_hand_mined_triplets(margin):
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    ids = [0, 1, 2, 3, 4, 5] * 2  # two views of six images
    out = TripletMarginLoss(margin)(x, torch.tensor(ids))
    want = _mined_reference(x, ids, margin)
    assert float(out.loss) == pytest.approx(float(want), rel=1e-6, abs=1e-9)
    assert float(out.loss) > 0


def test_well_separated_views_cost_nothing_and_gradients_flow():
    x = torch.eye(8, dtype=torch.float64).repeat(2, 1).requires_grad_()  # views identical
    out = TripletMarginLoss(0.5)(x, torch.arange(8).repeat(2))
    assert float(out.loss) == pytest.approx(0.0, abs=1e-5) and float(out.active) == 0.0
    y = F.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1).requires_grad_()
    TripletMarginLoss(2.0)(y, torch.arange(8).repeat(2)).loss.backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_refuses_a_margin_that_is_not_positive():
    with pytest.raises(ValueError, match="margin must be > 0"):
        TripletMarginLoss(0.0)


def test_trains_from_its_config_group(compose_cfg, tiny_minidisc, tmp_path):
    """``loss=triplet_margin`` is found through its yaml's _target_ alone (no table to edit)."""
    run_dir = tmp_path / "run"
    overrides = ["loss=triplet_margin", "loss.margin=0.3", "++trainer.log_every_n_steps=1"]
    cfg = compose_cfg(*tiny_overrides(tiny_minidisc), *overrides, f"run_dir={run_dir}")
    result = train(cfg)
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["loss"] == {
        "_target_": "fisc.losses.triplet_margin.TripletMarginLoss",
        "name": "triplet_margin",
        "margin": 0.3,
    }
    metrics = next((run_dir / "csv").glob("version_*/metrics.csv")).read_text()
    assert "train/active_triplets" in metrics.splitlines()[0]


def test_an_image_with_one_view_is_refused():
    x = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    with pytest.raises(ValueError, match=r"^every embedding needs at least one positive \("):
        TripletMarginLoss()(x, torch.tensor([0, 1, 0, 1, 2]))  # image 2 has one row


def test_active_is_the_share_of_anchors_inside_the_margin():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64).repeat(2, 1)
    x = F.normalize(base + 0.4 * torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    ids = [0, 1, 2, 3, 4, 5] * 2  # two noisy views of six images
    for margin in (0.05, 0.3, 1.2):
        per_anchor = _mined_reference(x, ids, margin, reduction="none")
        out = TripletMarginLoss(margin)(x, torch.tensor(ids))
        assert float(out.active) == pytest.approx(float((per_anchor > 0).double().mean()))
        assert out.logs() == {"active_triplets": out.active}
    # some anchors cost between 0 and 1 and some nothing: the share is not all or none
    per_anchor = _mined_reference(x, ids, 0.3, reduction="none")
    assert 0 < float((per_anchor > 0).double().mean()) < 1 and float(per_anchor.max()) < 1


def test_rank_1_of_3_mines_over_the_global_batch(monkeypatch):
    """On rank 1 of 3 the rows are the middle third of the gathered batch: each anchor's
    positive and negative are mined over all of it, itself left out."""
    import fisc.losses.triplet_margin as tm

    g = torch.Generator().manual_seed(5)
    x = F.normalize(torch.randn(18, 5, generator=g, dtype=torch.float64), dim=1)
    ids = torch.tensor([0, 1, 2] * 2 + [3, 4, 5] * 2 + [6, 7, 8] * 2)
    rows = slice(6, 12)
    monkeypatch.setattr(tm, "world", lambda: (1, 3))
    monkeypatch.setattr(tm, "gather_with_grad", lambda e: torch.cat([x[:6], e, x[12:]]))
    monkeypatch.setattr(tm, "gather_no_grad", lambda i: torch.cat([ids[:6], i, ids[12:]]))
    out = TripletMarginLoss(0.4)(x[rows], ids[rows])
    want = _mined_reference(x, ids.tolist(), 0.4, reduction="none")[rows]
    assert float(out.loss) == pytest.approx(float(want.mean()), rel=1e-6, abs=1e-9)
    # the row's own column is the middle third's: a one-row image there is refused
    lone = ids.clone()
    lone[6] = 99
    monkeypatch.setattr(tm, "gather_no_grad", lambda i: torch.cat([lone[:6], i, lone[12:]]))
    with pytest.raises(ValueError, match="at least one positive"):
        TripletMarginLoss(0.4)(x[rows], lone[rows])
