"""The cross-batch memory (fisc.losses.memory) of the losses that take negatives beyond the
batch: what InfoNCE and the contrastive loss remember, and how the memory goes through a
checkpoint, against the references of ``helpers.losses``."""

from __future__ import annotations

import pytest
import torch
from helpers.losses import contrastive_reference, mixed_reference, unit_rows

from fisc.losses.contrastive_xbm import ContrastiveXBMLoss
from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss


def test_infonce_memory_adds_remembered_negatives():
    """Batch t's softmax also holds the unmixed rows of the batches before it (newest first,
    the oldest dropped past memory_size), except views of the row's own instance or partner;
    none during memory_warmup; no memory (the default) is plain in-batch InfoNCE."""
    tau = 0.1
    ids = [[0, 1, 4, 0, 1, 4], [3, 4, 0, 3, 4, 0, 3], [5, 3, 6, 5, 3, 6]]
    partner = [[-1] * 6, [-1] * 6 + [4], [-1] * 6]
    lam = [[1.0] * 6, [1.0] * 6 + [0.6], [1.0] * 6]
    xs = [unit_rows(len(i), 5, seed=10 + t) for t, i in enumerate(ids)]

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


def test_cross_batch_memory_holds_past_batches():
    loss = ContrastiveXBMLoss(0.1, 0.9, memory_size=10).train()
    batches = [
        (unit_rows(6, 4, seed=s), torch.tensor([3 * s, 3 * s + 1, 3 * s + 2] * 2)) for s in range(3)
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
        (unit_rows(6, 4, seed=s), torch.tensor([3 * s, 3 * s + 1, 3 * s + 2] * 2)) for s in range(3)
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


def test_memory_arguments_are_checked():
    with pytest.raises(ValueError, match=r"^memory_size must be >= 0, got -1$"):
        ContrastiveXBMLoss(memory_size=-1)
    with pytest.raises(ValueError, match=r"^memory_warmup must be >= 0, got -2$"):
        InfoNCEKoLeoLoss(memory_size=4, memory_warmup=-2)
    loss = ContrastiveXBMLoss(memory_size=0, memory_warmup=0)
    assert (loss.memory_size, loss.memory_warmup) == (0, 0)


def test_steps_count_training_calls_only_and_no_memory_keeps_nothing():
    x, ids = unit_rows(6, 4, seed=1), torch.tensor([0, 1, 2] * 2)
    loss = ContrastiveXBMLoss(0.1, 0.9, memory_size=4).eval()
    loss(x, ids)  # validation: neither counted nor remembered
    assert loss.steps == 0 and len(loss.mem_ids) == 0 and loss.memory() is None
    loss.train()
    loss(x, ids)
    assert loss.steps == 1 and loss.mem_ids.tolist() == [0, 1, 2, 0]  # newest first, 4 kept
    torch.testing.assert_close(loss.memory()[0], x[:4], rtol=0, atol=0)
    none = ContrastiveXBMLoss(0.1, 0.9, memory_size=0).train()
    for _ in range(3):
        none(x, ids)
    assert none.steps == 3 and none.mem_emb.numel() == 0 and none.memory() is None


def test_ids_and_step_count_are_integers_and_a_memory_of_one_is_used():
    big = 2**40 + 1  # exact only as an integer (float32 keeps 24 bits, float64 53)
    loss = InfoNCEKoLeoLoss(0.1, 0.0, memory_size=1).train()
    assert loss.mem_ids.dtype == loss.mem_steps.dtype == torch.long
    loss(unit_rows(4, 3, seed=0), torch.tensor([big, 7, big, 7]))
    state = loss.state_dict()
    assert state["mem_ids"].dtype == state["mem_steps"].dtype == torch.long
    assert loss.mem_ids.tolist() == [big] and loss.memory()[1].tolist() == [big]


def test_the_mixins_warmup_defaults_to_zero():
    from fisc.losses.memory import CrossBatchMemory

    class Remembering(CrossBatchMemory):
        def __init__(self):
            super().__init__()
            self._init_memory(3)

    assert Remembering().memory_warmup == 0
