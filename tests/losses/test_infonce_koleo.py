"""InfoNCE + KoLeo (fisc.losses.infonce_koleo): against a plain loop implementation, with
mixed positives (SSCD) and the extra views that make them, and across 2 gloo processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.losses import mixed_reference, unit_rows
from helpers.multiprocess import run_on_gloo_ranks

from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss
from fisc.losses.mix import mix_images


def reference_loss(x: torch.Tensor, ids: list[int], tau: float, lam: float, eps: float = 1e-8):
    """Row by row, straight from the definitions."""
    n = len(ids)
    infonce_terms, koleo_terms = [], []
    for i in range(n):
        denom = sum(math.exp(float(x[i] @ x[j]) / tau) for j in range(n) if j != i)
        positives = [j for j in range(n) if j != i and ids[j] == ids[i]]
        infonce_terms.append(
            -sum(math.log(math.exp(float(x[i] @ x[p]) / tau) / denom) for p in positives)
            / len(positives)
        )
        nearest = min(float((x[i] - x[j]).norm()) for j in range(n) if ids[j] != ids[i])
        koleo_terms.append(-math.log(math.sqrt(nearest**2 + eps**2) + eps))
    infonce = sum(infonce_terms) / n
    koleo = sum(koleo_terms) / n
    return infonce + lam * koleo, infonce, koleo


@pytest.mark.parametrize("tau,lam", [(0.05, 10.0), (0.5, 0.0), (0.1, 30.0)])
def test_matches_reference(tau, lam):
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)
    ids = [0, 1, 2, 3, 4, 5] * 2  # two views of six images
    out = InfoNCEKoLeoLoss(tau, lam)(x, torch.tensor(ids))
    expected, infonce, koleo = reference_loss(x, ids, tau, lam)
    assert float(out.infonce) == pytest.approx(infonce, rel=1e-9)
    assert float(out.koleo) == pytest.approx(koleo, rel=1e-9)
    assert float(out.loss) == pytest.approx(expected, rel=1e-9)


def test_perfect_embeddings_have_low_loss_and_full_accuracy():
    base = F.normalize(torch.eye(6, 8, dtype=torch.float64), dim=1)
    x = torch.cat([base, base])
    out = InfoNCEKoLeoLoss(0.05, 0.0)(x, torch.arange(6).repeat(2))
    assert float(out.positive_rank_accuracy) == 1.0
    assert float(out.infonce) < 1e-6
    # the names a run logs (train/infonce, train/koleo, train/pos_top1)
    assert out.logs() == {
        "infonce": out.infonce,
        "koleo": out.koleo,
        "pos_top1": out.positive_rank_accuracy,
    }


def test_row_without_positive_is_an_error():
    x = F.normalize(torch.randn(4, 8), dim=1)
    with pytest.raises(ValueError, match="positive"):
        InfoNCEKoLeoLoss()(x, torch.tensor([0, 1, 2, 3]))


# --- mixed positives -------------------------------------------------------------------------


def test_mixed_positives_match_reference():
    x = unit_rows(10, 6)
    ids = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]  # 4 images x 2 views, then 2 mixed images
    partner = [-1] * 8 + [2, 3]
    lam = [1.0] * 8 + [0.7, 0.25]
    out = InfoNCEKoLeoLoss(0.1, 0.0)(
        x, torch.tensor(ids), torch.tensor(partner), torch.tensor(lam, dtype=torch.float64)
    )
    assert float(out.infonce) == pytest.approx(mixed_reference(x, ids, partner, lam, 0.1), 1e-9)


def test_koleo_only_over_the_real_descriptors():
    """KoLeo: for each unmixed row, the distance to the nearest unmixed row of another
    instance; mixed rows are neither anchors nor candidates, even when they sit right next to
    a real row."""
    x = unit_rows(10, 6, seed=3)
    ids = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]
    partner = [-1] * 8 + [2, 3]
    lam = [1.0] * 8 + [0.6, 0.3]
    x[8] = F.normalize(x[0] + 1e-3 * x[5], dim=0)  # mixed, id 1, almost on row 0 (id 0)
    x[9] = F.normalize(x[3] + 1e-3 * x[6], dim=0)  # mixed, id 2, almost on row 3 (id 3)
    eps = 1e-8

    def koleo(rows):
        terms = []
        for i in rows:
            nearest = min(float((x[i] - x[j]).norm()) for j in rows if ids[j] != ids[i])
            terms.append(-math.log(math.sqrt(nearest**2 + eps**2) + eps))
        return sum(terms) / len(terms)

    out = InfoNCEKoLeoLoss(0.1, 2.0, eps=eps)(
        x, torch.tensor(ids), torch.tensor(partner), torch.tensor(lam, dtype=torch.float64)
    )
    real = [i for i in range(10) if partner[i] < 0]
    assert float(out.koleo) == pytest.approx(koleo(real), rel=1e-9)
    assert koleo(range(10)) > koleo(real) + 1.0  # the mixed rows would change it a lot
    assert float(out.loss) == pytest.approx(float(out.infonce) + 2.0 * koleo(real), rel=1e-9)


def test_no_mixed_rows_is_plain_infonce():
    x = unit_rows(8, 5, seed=2)
    ids = torch.arange(4).repeat(2)
    plain = InfoNCEKoLeoLoss(0.1, 3.0)(x, ids)
    explicit = InfoNCEKoLeoLoss(0.1, 3.0)(
        x, ids, torch.full((8,), -1), torch.ones(8, dtype=torch.float64)
    )
    assert float(plain.loss) == pytest.approx(float(explicit.loss), rel=1e-12)


def test_infonce_extra_views_are_the_mixed_images_and_their_targets():
    """mix_fraction: round(fraction x n) images from mix_images (same draws), and keyword
    arguments that mark only those rows as mixed; none at mix_fraction 0."""
    g = torch.Generator().manual_seed(2)
    view_b, index = torch.rand(6, 3, 8, 8, generator=g), torch.tensor([4, 9, 1, 7, 3, 0])
    assert InfoNCEKoLeoLoss(mix_fraction=0.0).extra_views(view_b, index) is None
    torch.manual_seed(5)
    images, primary, partner, lam = mix_images(view_b, index, 2, 0.5, 0.3)  # round(0.3 * 6)
    torch.manual_seed(5)
    extra = InfoNCEKoLeoLoss(mix_fraction=0.3, mix_alpha=0.5, cutmix_prob=0.3).extra_views(
        view_b, index
    )
    assert torch.equal(extra.images, images) and torch.equal(extra.ids, primary)
    assert extra.loss_kwargs["mix_partner"].tolist() == [-1] * 12 + partner.tolist()
    assert extra.loss_kwargs["mix_lam"].tolist() == [1.0] * 12 + lam.float().tolist()
    for cutmix_prob in (0.0, 1.0):  # the loss's own cutmix_prob reaches mix_images
        torch.manual_seed(6)
        want = mix_images(view_b, index, 3, 1.0, cutmix_prob)[0]
        torch.manual_seed(6)
        loss = InfoNCEKoLeoLoss(mix_fraction=0.5, cutmix_prob=cutmix_prob)
        assert torch.equal(loss.extra_views(view_b, index).images, want)


# --- world-size invariance: 2 gloo processes == one process on the concatenated batch ------

N_PER_RANK, DIM_IN, DIM_OUT = 6, 10, 5  # 3 images x 2 views per rank


def _data():
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(2 * N_PER_RANK, DIM_IN, generator=g, dtype=torch.float64)
    images = N_PER_RANK // 2
    ids = torch.cat([torch.arange(r * images, (r + 1) * images).repeat(2) for r in range(2)])
    return inputs, ids


def _model():
    torch.manual_seed(3)
    return torch.nn.Linear(DIM_IN, DIM_OUT).double()


def _worker(rank: int):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    inputs, ids = _data()
    rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    model = DDP(_model())
    out = InfoNCEKoLeoLoss(0.1, 5.0)(F.normalize(model(inputs[rows]), dim=1), ids[rows])
    out.loss.backward()  # DDP averages gradients over ranks
    loss = out.loss.detach().clone()
    dist.all_reduce(loss)
    return {"loss": loss / 2, "grads": [p.grad for p in model.parameters()]}


@pytest.mark.ddp
def test_two_gloo_ranks_equal_single_process(tmp_path):
    results = run_on_gloo_ranks(_worker, tmp_path)
    inputs, ids = _data()
    model = _model()
    out = InfoNCEKoLeoLoss(0.1, 5.0)(F.normalize(model(inputs), dim=1), ids)
    out.loss.backward()
    for rank in range(2):
        result = results[rank]
        assert float(result["loss"]) == pytest.approx(float(out.loss), rel=1e-10)
        for got, expected in zip(
            result["grads"], [p.grad for p in model.parameters()], strict=True
        ):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_pos_top1_counts_unmixed_rows_whose_nearest_candidate_is_a_positive():
    x = unit_rows(10, 3, seed=2)  # 3 dims: nearest neighbours are often wrong
    ids = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]
    partner = [-1] * 8 + [2, 3]
    lam = torch.tensor([1.0] * 8 + [0.5, 0.5], dtype=torch.float64)
    hit = []
    for i in range(8):  # the mixed rows are neither counted nor candidates
        best = max((j for j in range(8) if j != i), key=lambda j: float(x[i] @ x[j]))
        hit.append(ids[best] == ids[i])
    hits = sum(hit)
    assert 0 < hits < 8
    x[8] = F.normalize(x[hit.index(True)] + 1e-3 * x[9], dim=0)  # a mixed row nearest a hit
    out = InfoNCEKoLeoLoss(0.1, 0.0)(x, torch.tensor(ids), torch.tensor(partner), lam)
    assert float(out.positive_rank_accuracy) == hits / 8


def test_a_mixed_image_without_its_partner_in_the_batch_is_an_error():
    x = unit_rows(6, 4, seed=1)
    ids, partner = [0, 1, 0, 1, 0, 1], [-1, -1, -1, -1, 1, 7]  # no view of image 7
    lam = torch.tensor([1.0] * 4 + [0.5, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="^every mixed image needs a view of its partner in the"):
        InfoNCEKoLeoLoss()(x, torch.tensor(ids), torch.tensor(partner), lam)
    with pytest.raises(ValueError, match=r"^every embedding needs at least one positive \("):
        InfoNCEKoLeoLoss()(x[:5], torch.tensor([0, 1, 0, 1, 2]))


def _others(t, ids, rows):
    """A stand-in for gathering ``t`` over 3 ranks: the other ranks' ids, or no mixed rows."""
    if t.dtype == torch.bool:  # the mixed-row flags: none elsewhere
        return torch.cat(
            [
                torch.zeros(rows.start, dtype=torch.bool),
                t,
                torch.zeros(18 - rows.stop, dtype=torch.bool),
            ]
        )
    return torch.cat([ids[: rows.start], t, ids[rows.stop :]])


def test_three_ranks_average_to_the_loss_of_the_whole_batch(monkeypatch):
    """Each of 3 ranks holds a third of the global batch (gathered by stand-ins): the mean of
    the ranks' losses, InfoNCE, KoLeo and pos_top1 is the one-process figure on all rows."""
    import fisc.losses.infonce_koleo as ik

    x = unit_rows(18, 5, seed=8)
    ids = torch.tensor([0, 1, 2] * 2 + [3, 4, 5] * 2 + [6, 7, 8] * 2)
    whole = InfoNCEKoLeoLoss(0.1, 2.0)(x, ids)
    parts = []
    for rank in range(3):
        rows = slice(6 * rank, 6 * rank + 6)
        monkeypatch.setattr(ik, "world", lambda r=rank: (r, 3))
        monkeypatch.setattr(
            ik, "gather_with_grad", lambda e, r=rows: torch.cat([x[: r.start], e, x[r.stop :]])
        )
        monkeypatch.setattr(ik, "gather_no_grad", lambda t, r=rows: _others(t, ids, r))
        parts.append(InfoNCEKoLeoLoss(0.1, 2.0)(x[rows], ids[rows]))
    for field in ("loss", "infonce", "koleo", "positive_rank_accuracy"):
        mean = sum(float(getattr(p, field)) for p in parts) / 3
        assert mean == pytest.approx(float(getattr(whole, field)), rel=1e-9), field


def test_remembered_rows_of_another_precision_are_cast_to_the_batchs():
    loss = InfoNCEKoLeoLoss(0.1, 0.0, memory_size=8).train()
    loss(unit_rows(6, 4, seed=1).float(), torch.arange(3).repeat(2))  # float32 remembered
    x, ids = unit_rows(6, 4, seed=2), torch.arange(3, 6).repeat(2)
    out = loss(x, ids)  # float64 batch
    ref = InfoNCEKoLeoLoss(0.1, 0.0, memory_size=8).train()
    ref(unit_rows(6, 4, seed=1).float().double(), torch.arange(3).repeat(2))
    assert out.loss.dtype == torch.float64
    assert float(out.loss) == pytest.approx(float(ref(x, ids).loss), rel=1e-12)


def test_argument_checks():
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0\.0$"):
        InfoNCEKoLeoLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"^entropy_weight must be >= 0, got -1\.0$"):
        InfoNCEKoLeoLoss(entropy_weight=-1.0)
    InfoNCEKoLeoLoss(entropy_weight=0.0)


def test_koleo_of_coinciding_descriptors_is_finite_and_eps_bounded():
    """Two images with the same descriptor: distance 0, KoLeo term -log(sqrt(0 + eps^2) + eps)
    = -log(2 eps) for each, as the reference computes it."""
    x = unit_rows(8, 5, seed=4)
    x[1] = x[0]  # image 1's first view on image 0's
    ids = [0, 1, 2, 3] * 2
    out = InfoNCEKoLeoLoss(0.1, 1.0, eps=1e-6)(x, torch.tensor(ids))
    _, infonce, koleo = reference_loss(x, ids, 0.1, 1.0, eps=1e-6)
    assert math.isfinite(float(out.koleo))
    assert float(out.koleo) == pytest.approx(koleo, rel=1e-9)
    assert float(out.infonce) == pytest.approx(infonce, rel=1e-9)
