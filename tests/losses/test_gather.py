"""World size (fisc.losses.gather): on 2 gloo processes the recipe losses (InfoNCE with mixed
positives, contrastive + cross-batch memory, ArcFace) give the losses and gradients of one
process on the concatenated batch, over two steps (the second sees the memory the first
filled). InfoNCE + KoLeo alone: ``test_infonce_koleo.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.multiprocess import run_on_gloo_ranks

from fisc.losses.arcface import ArcFaceLoss
from fisc.losses.contrastive_xbm import ContrastiveXBMLoss
from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss

N_PER_RANK, DIM_IN, DIM_OUT = 6, 10, 5


def _data():
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 2 * N_PER_RANK, DIM_IN, generator=g, dtype=torch.float64)
    images = N_PER_RANK // 2
    ids = torch.cat([torch.arange(r * images, (r + 1) * images).repeat(2) for r in range(2)])
    return inputs, ids  # two steps of the same global ids


def _model():
    torch.manual_seed(3)
    return torch.nn.Linear(DIM_IN, DIM_OUT).double()


def _loss(kind):
    torch.manual_seed(4)
    if kind == "contrastive_xbm":
        return ContrastiveXBMLoss(0.2, 0.8, memory_size=8).double().train()
    if kind == "arcface":
        return ArcFaceLoss(2 * N_PER_RANK, DIM_OUT, 0.3, 10.0).double()
    return InfoNCEKoLeoLoss(0.1, 2.0)


def _mixed_batch():
    """Per rank: two images x two views, then two mixed images (each of the rank's two)."""
    ids, partner, lam = [], [], []
    for r in range(2):
        a, b = 10 * r, 10 * r + 1
        ids += [a, b, a, b, a, b]
        partner += [-1, -1, -1, -1, b, a]
        lam += [1.0, 1.0, 1.0, 1.0, 0.6, 0.3]
    return torch.tensor(ids), torch.tensor(partner), torch.tensor(lam, dtype=torch.float64)


def _step(kind, model, loss_fn, x, ids, rows):
    emb = F.normalize(model(x[rows]), dim=1)
    if kind == "infonce_mix":
        mix_ids, partner, lam = _mixed_batch()
        return loss_fn(emb, mix_ids[rows], partner[rows], lam[rows])
    return loss_fn(emb, ids[rows])


def _worker(rank, kind):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    inputs, ids = _data()
    rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    model, loss_fn = _model(), _loss(kind)
    wrapped = DDP(torch.nn.ModuleDict({"m": model, "l": loss_fn}))
    losses = []
    for step in range(2):  # the second step sees the memory filled by the first
        out = _step(kind, wrapped.module["m"], wrapped.module["l"], inputs[step], ids, rows)
        wrapped.zero_grad()
        out.loss.backward()
        # DDP hooks fire on the wrapped module's parameters: reduce by hand instead
        for p in wrapped.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= 2
        value = out.loss.detach().clone()
        dist.all_reduce(value)
        losses.append(value / 2)
    grads = [p.grad for p in wrapped.parameters()]
    return {"losses": losses, "grads": grads}


@pytest.mark.ddp
@pytest.mark.parametrize("kind", ["infonce_mix", "contrastive_xbm", "arcface"])
def test_two_gloo_ranks_equal_single_process(kind, tmp_path):
    results = run_on_gloo_ranks(_worker, tmp_path, kind)
    inputs, ids = _data()
    model, loss_fn = _model(), _loss(kind)
    both = torch.nn.ModuleDict({"m": model, "l": loss_fn})
    everything = slice(0, 2 * N_PER_RANK)
    expected = []
    for step in range(2):
        both.zero_grad()
        out = _step(kind, model, loss_fn, inputs[step], ids, everything)
        out.loss.backward()
        expected.append(float(out.loss))
    for rank in range(2):
        result = results[rank]
        assert [float(v) for v in result["losses"]] == pytest.approx(expected, rel=1e-10)
        for got, want in zip(result["grads"], [p.grad for p in both.parameters()], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
