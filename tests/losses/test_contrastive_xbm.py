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


def _pairs_reference(x, ids, pos_margin, neg_margin):
    """Pair by pair: each term averaged over its non-zero pairs; the share of negative pairs
    inside the margin."""
    pos, neg, n_neg = [], [], 0
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i == j:
                continue
            d = float(torch.dist(x[i], x[j]))
            if ids[i] == ids[j]:
                pos.append(max(0.0, d - pos_margin))
            else:
                n_neg += 1
                neg.append(max(0.0, neg_margin - d))
    pos, neg = [c for c in pos if c > 0], [c for c in neg if c > 0]
    p = sum(pos) / max(1, len(pos))
    q = sum(neg) / max(1, len(neg))
    return p, q, len(neg) / n_neg


@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(0.0, 1.0), (0.3, 1.1), (0.6, 0.9)])
def test_terms_and_active_negatives_match_pairs_counted_by_hand(pos_margin, neg_margin):
    x = unit_rows(12, 4, seed=3)
    ids = [0, 1, 2, 3, 4, 5] * 2
    out = ContrastiveXBMLoss(pos_margin, neg_margin)(x, torch.tensor(ids))
    p, q, active = _pairs_reference(x, ids, pos_margin, neg_margin)
    assert 0 < active < 1
    assert float(out.positive) == pytest.approx(p, rel=1e-9)
    assert float(out.negative) == pytest.approx(q, rel=1e-9)
    assert float(out.loss) == pytest.approx(p + q, rel=1e-9)
    assert float(out.active_negatives) == pytest.approx(active, rel=1e-6)  # float32 counts
    assert out.logs() == {
        "pos_loss": out.positive,
        "neg_loss": out.negative,
        "active_neg": out.active_negatives,
    }


def test_no_pair_inside_a_margin_costs_zero():
    x = unit_rows(4, 4, seed=0)
    same = torch.cat([x, x])  # the two views identical: every positive costs nothing
    out = ContrastiveXBMLoss(0.01, 0.02)(same, torch.arange(4).repeat(2))
    assert float(out.loss) == 0.0 and float(out.active_negatives) == 0.0


def test_margins_are_checked():
    for pos, neg in [(-0.1, 1.0), (0.5, 0.5), (0.6, 0.4)]:
        with pytest.raises(
            ValueError, match=rf"^need 0 <= pos_margin < neg_margin, got {pos}, {neg}$"
        ):
            ContrastiveXBMLoss(pos, neg)
    ContrastiveXBMLoss(0.0, 0.1)


def test_a_single_pair_is_its_own_average():
    """One row against one remembered embedding: one pair, whose cost is the term itself."""
    x = unit_rows(3, 4, seed=4)
    for same_image in (True, False):
        loss = ContrastiveXBMLoss(0.0, 2.0, memory_size=4)
        loss(x[:1], torch.tensor([7]))  # no pair yet; fills the memory with row 0
        out = loss(x[1:2], torch.tensor([7 if same_image else 8]))
        d = float(torch.dist(x[0], x[1]))
        if same_image:
            assert float(out.positive) == pytest.approx(d) and float(out.negative) == 0.0
        else:
            assert float(out.negative) == pytest.approx(2.0 - d) and float(out.positive) == 0.0
            assert float(out.active_negatives) == 1.0


def test_memory_warmup_reaches_the_memory():
    x, ids = unit_rows(6, 4, seed=1), torch.arange(3).repeat(2)
    loss = ContrastiveXBMLoss(0.1, 0.9, memory_size=8, memory_warmup=2).train()
    loss(x, ids)
    assert loss.memory() is None  # 1 step < 2
    loss(x, ids)
    assert loss.memory() is not None and loss.memory_warmup == 2


def test_remembered_rows_of_another_precision_are_cast_to_the_batchs():
    loss = ContrastiveXBMLoss(0.1, 0.9, memory_size=8).train()
    loss(unit_rows(6, 4, seed=1), torch.arange(3).repeat(2))  # float64 rows remembered
    x = unit_rows(6, 4, seed=2)
    out = loss(x.float(), torch.arange(3, 6).repeat(2))
    assert out.loss.dtype == torch.float32
    ref = ContrastiveXBMLoss(0.1, 0.9, memory_size=8).train()
    ref(unit_rows(6, 4, seed=1).float(), torch.arange(3).repeat(2))
    want = ref(x.float(), torch.arange(3, 6).repeat(2))
    assert float(out.loss) == pytest.approx(float(want.loss), rel=1e-6)


def test_rank_1_of_3_leaves_out_its_own_rows_of_the_gathered_batch(monkeypatch):
    """Rank 1's rows are the middle third of the global batch: each pairs with every other
    row of it, its own left out (counts summed over ranks: the stand-in sums as one rank)."""
    import fisc.losses.contrastive_xbm as cx

    x = unit_rows(18, 4, seed=6)
    ids = torch.arange(9).repeat(2)
    ids = torch.cat([ids[:6], ids[6:12], ids[12:]])
    rows = slice(6, 12)
    monkeypatch.setattr(cx, "world", lambda: (1, 3))
    monkeypatch.setattr(cx, "gather_with_grad", lambda e: torch.cat([x[:6], e, x[12:]]))
    monkeypatch.setattr(cx, "gather_no_grad", lambda i: torch.cat([ids[:6], i, ids[12:]]))
    monkeypatch.setattr(cx, "_global_sum", lambda counts: counts)
    out = ContrastiveXBMLoss(0.0, 1.0)(x[rows], ids[rows])
    pos, neg = [], []
    for i in range(6, 12):
        for j in range(18):
            if j != i:
                d = float(torch.dist(x[i], x[j]))
                (pos if ids[j] == ids[i] else neg).append(
                    max(0.0, d) if ids[j] == ids[i] else max(0.0, 1.0 - d)
                )
    mean = lambda v: sum(c for c in v if c > 0) / max(1, sum(c > 0 for c in v))  # noqa: E731
    # world size 3 with counts of one rank: each term is 3x this rank's own average
    assert float(out.positive) == pytest.approx(3 * mean(pos), rel=1e-9)
    assert float(out.negative) == pytest.approx(3 * mean(neg), rel=1e-9)
