"""The recipe losses: mixed positives (SSCD), contrastive + cross-batch memory (1st place) and
ArcFace (2nd place), against independent references and across 2 gloo processes."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from fisc.losses.arcface import ArcFaceLoss
from fisc.losses.contrastive_xbm import ContrastiveXBMLoss
from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss
from fisc.losses.mix import mix_images


def _unit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# --- InfoNCE with mixed positives ----------------------------------------------------------


def mixed_reference(x, ids, partner, lam, tau, mem=(), mem_ids=()):
    """Row by row: unmixed columns only; target λ on the primary's views, 1-λ on the partner's;
    remembered embeddings of other instances (not the row's, nor its partner's) as negatives."""
    n = len(ids)
    cols = [j for j in range(n) if partner[j] < 0]
    total = 0.0
    for i in range(n):
        cand = [j for j in cols if j != i]
        denom = sum(math.exp(float(x[i] @ x[j]) / tau) for j in cand)
        denom += sum(math.exp(float(x[i] @ m) / tau) for m, k in zip(mem, mem_ids, strict=True)
                     if k not in (ids[i], partner[i]))  # fmt: skip
        logp = {j: float(x[i] @ x[j]) / tau - math.log(denom) for j in cand}
        pos = [j for j in cand if ids[j] == ids[i]]
        term = lam[i] * sum(logp[j] for j in pos) / len(pos)
        if partner[i] >= 0:
            part = [j for j in cand if ids[j] == partner[i]]
            term += (1 - lam[i]) * sum(logp[j] for j in part) / len(part)
        total -= term
    return total / n


def test_mixed_positives_match_reference():
    x = _unit(10, 6)
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
    x = _unit(10, 6, seed=3)
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


def test_infonce_memory_adds_remembered_negatives():
    """Batch t's softmax also holds the unmixed rows of the batches before it (newest first,
    the oldest dropped past memory_size), except views of the row's own instance or partner;
    none during memory_warmup; no memory (the default) is plain in-batch InfoNCE."""
    tau = 0.1
    ids = [[0, 1, 4, 0, 1, 4], [3, 4, 0, 3, 4, 0, 3], [5, 3, 6, 5, 3, 6]]
    partner = [[-1] * 6, [-1] * 6 + [4], [-1] * 6]
    lam = [[1.0] * 6, [1.0] * 6 + [0.6], [1.0] * 6]
    xs = [_unit(len(i), 5, seed=10 + t) for t, i in enumerate(ids)]

    def run(loss):
        return [
            float(loss(x, torch.tensor(i), torch.tensor(p), torch.tensor(la, dtype=torch.float64))
                  .infonce)
            for x, i, p, la in zip(xs, ids, partner, lam, strict=True)
        ]  # fmt: skip

    got = run(InfoNCEKoLeoLoss(tau, 0.0, memory_size=9).train())
    mem = list(xs[1][:6]) + list(xs[0][:3])  # batch 1's 6 unmixed rows, then batch 0's newest 3
    mem_ids = ids[1][:6] + ids[0][:3]
    expected = [
        mixed_reference(xs[0], ids[0], partner[0], lam[0], tau),
        mixed_reference(xs[1], ids[1], partner[1], lam[1], tau, xs[0], ids[0]),
        mixed_reference(xs[2], ids[2], partner[2], lam[2], tau, mem, mem_ids),
    ]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got[2] != pytest.approx(mixed_reference(xs[2], ids[2], partner[2], lam[2], tau))
    warm = run(InfoNCEKoLeoLoss(tau, 0.0, memory_size=9, memory_warmup=2).train())
    assert warm[1] == pytest.approx(mixed_reference(xs[1], ids[1], partner[1], lam[1], tau))
    assert warm[2] == pytest.approx(expected[2], rel=1e-9)
    plain = run(InfoNCEKoLeoLoss(tau, 0.0).train())
    batches = zip(xs, ids, partner, lam, strict=True)
    assert plain == pytest.approx([mixed_reference(*b, tau) for b in batches], rel=1e-9)


def test_no_mixed_rows_is_plain_infonce():
    x = _unit(8, 5, seed=2)
    ids = torch.arange(4).repeat(2)
    plain = InfoNCEKoLeoLoss(0.1, 3.0)(x, ids)
    explicit = InfoNCEKoLeoLoss(0.1, 3.0)(
        x, ids, torch.full((8,), -1), torch.ones(8, dtype=torch.float64)
    )
    assert float(plain.loss) == pytest.approx(float(explicit.loss), rel=1e-12)


def test_mix_images_mixup_and_cutmix():
    torch.manual_seed(0)
    views = torch.stack([torch.full((3, 8, 8), float(v)) for v in range(4)])
    ids = torch.tensor([10, 11, 12, 13])
    mixed, primary, partner, lam = mix_images(views, ids, 4, cutmix_prob=0.5)
    assert primary.tolist() == [10, 11, 12, 13] and partner.tolist() == [11, 12, 13, 10]
    for i in range(4):
        a, b = float(i), float((i + 1) % 4)
        # every pixel is a (λ-weighted) mix of the two sources; the mean gives λ back
        expected_mean = lam[i] * a + (1 - lam[i]) * b
        assert float(mixed[i].mean()) == pytest.approx(float(expected_mean), abs=1e-5)
        assert 0.0 < float(lam[i]) < 1.0


# --- contrastive + cross-batch memory ------------------------------------------------------


def test_contrastive_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    x = _unit(12, 4, seed=1).float()
    ids = torch.arange(6).repeat(2)
    ours = ContrastiveXBMLoss(pos_margin=0.0, neg_margin=1.0)(x, ids)
    theirs = pml.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)(x, ids)
    assert float(ours.loss) == pytest.approx(float(theirs), rel=1e-5)


def contrastive_reference(x, ids, mem, mem_ids, pm, nm):
    pos, neg = [], []
    for i in range(len(ids)):
        cands = [(x[j], ids[j]) for j in range(len(ids)) if j != i]
        cands += list(zip(mem, mem_ids, strict=True))
        for y, k in cands:
            d = float((x[i] - y).norm())
            (pos if k == ids[i] else neg).append(
                max(0.0, d - pm) if k == ids[i] else max(0.0, nm - d)
            )
    mean = lambda v: sum(c for c in v if c > 0) / max(1, sum(1 for c in v if c > 0))  # noqa: E731
    return mean(pos) + mean(neg)


def test_cross_batch_memory_holds_past_batches():
    loss = ContrastiveXBMLoss(0.1, 0.9, memory_size=10).train()
    batches = [
        (_unit(6, 4, seed=s), torch.tensor([3 * s, 3 * s + 1, 3 * s + 2] * 2)) for s in range(3)
    ]
    outs = [loss(x, ids) for x, ids in batches]
    # step 1: no memory yet; step 2: batch 0 remembered; step 3: batches 1 and 0 (6 + 4 of them)
    assert float(outs[0].loss) == pytest.approx(
        contrastive_reference(*batches[0], [], [], 0.1, 0.9), rel=1e-9
    )
    x1, i1 = batches[1]
    assert float(outs[1].loss) == pytest.approx(
        contrastive_reference(
            x1, i1.tolist(), list(batches[0][0]), batches[0][1].tolist(), 0.1, 0.9
        ),
        rel=1e-9,
    )
    x2, i2 = batches[2]
    mem = list(batches[1][0]) + list(batches[0][0][:4])
    mem_ids = batches[1][1].tolist() + batches[0][1][:4].tolist()
    assert float(outs[2].loss) == pytest.approx(
        contrastive_reference(x2, i2.tolist(), mem, mem_ids, 0.1, 0.9), rel=1e-9
    )
    assert len(loss.mem_ids) == 10


def test_cross_batch_memory_survives_a_checkpoint_but_not_init_from(tmp_path):
    """Saved and loaded with the module (a resume continues with the same memory and step
    count); a checkpoint from before the memory was saved loads with an empty one; a new run
    started from these weights (init_from) starts with an empty memory."""
    batches = [
        (_unit(6, 4, seed=s), torch.tensor([3 * s, 3 * s + 1, 3 * s + 2] * 2)) for s in range(3)
    ]
    kept = ContrastiveXBMLoss(0.1, 0.9, memory_size=10, memory_warmup=1).train()
    for x, ids in batches[:2]:
        kept(x, ids)
    torch.save({"state_dict": kept.state_dict()}, tmp_path / "ck.pt")
    resumed = ContrastiveXBMLoss(0.1, 0.9, memory_size=10, memory_warmup=1).train()
    resumed.load_state_dict(torch.load(tmp_path / "ck.pt", weights_only=True)["state_dict"])
    assert resumed.steps == 2 and resumed.mem_ids.tolist() == kept.mem_ids.tolist()
    x2, i2 = batches[2]
    mem = list(batches[1][0]) + list(batches[0][0][:4])
    mem_ids = batches[1][1].tolist() + batches[0][1][:4].tolist()
    expected = contrastive_reference(x2, i2.tolist(), mem, mem_ids, 0.1, 0.9)
    assert float(resumed(x2, i2).loss) == pytest.approx(expected, rel=1e-9)

    old = {k: v for k, v in kept.state_dict().items() if not k.startswith("mem_")}
    legacy = ContrastiveXBMLoss(0.1, 0.9, memory_size=10).train()
    legacy.load_state_dict(old, strict=True)
    assert legacy.steps == 0 and len(legacy.mem_ids) == 0

    from types import SimpleNamespace

    from fisc.train.checkpointing import load_initial_weights

    model = torch.nn.Linear(2, 2)
    torch.save(
        {"state_dict": {**{f"model.{k}": v for k, v in model.state_dict().items()},
                        **{f"loss.{k}": v for k, v in kept.state_dict().items()}}},
        tmp_path / "init.ckpt",
    )  # fmt: skip
    fresh = SimpleNamespace(model=torch.nn.Linear(2, 2), loss=ContrastiveXBMLoss(0.1, 0.9, 10))
    load_initial_weights(fresh, str(tmp_path / "init.ckpt"))
    assert fresh.loss.steps == 0 and len(fresh.loss.mem_ids) == 0
    assert torch.equal(fresh.model.weight, model.weight)


# --- ArcFace ---------------------------------------------------------------------------------


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


# --- world size: 2 gloo processes == one process on the concatenated batch ------------------

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


def _worker(rank, kind, init_file, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
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
        torch.save({"losses": losses, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.parametrize("kind", ["infonce_mix", "contrastive_xbm", "arcface"])
def test_two_gloo_ranks_equal_single_process(kind, tmp_path):
    torch.multiprocessing.spawn(
        _worker, args=(kind, str(tmp_path / "init"), str(tmp_path)), nprocs=2
    )
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
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert [float(v) for v in result["losses"]] == pytest.approx(expected, rel=1e-10)
        for got, want in zip(result["grads"], [p.grad for p in both.parameters()], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


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
