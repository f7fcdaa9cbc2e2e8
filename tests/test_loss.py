"""InfoNCE + KoLeo against a plain loop implementation, and across 2 gloo processes."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss


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


def test_row_without_positive_is_an_error():
    x = F.normalize(torch.randn(4, 8), dim=1)
    with pytest.raises(ValueError, match="positive"):
        InfoNCEKoLeoLoss()(x, torch.tensor([0, 1, 2, 3]))


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


def _worker(rank: int, init_file: str, out_dir: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        inputs, ids = _data()
        rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        model = DDP(_model())
        out = InfoNCEKoLeoLoss(0.1, 5.0)(F.normalize(model(inputs[rows]), dim=1), ids[rows])
        out.loss.backward()  # DDP averages gradients over ranks
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        torch.save(
            {"loss": loss / 2, "grads": [p.grad for p in model.parameters()]},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_gloo_ranks_equal_single_process(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    inputs, ids = _data()
    model = _model()
    out = InfoNCEKoLeoLoss(0.1, 5.0)(F.normalize(model(inputs), dim=1), ids)
    out.loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert float(result["loss"]) == pytest.approx(float(out.loss), rel=1e-10)
        for got, expected in zip(
            result["grads"], [p.grad for p in model.parameters()], strict=True
        ):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
