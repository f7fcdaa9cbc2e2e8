"""Multi-node training: two torchrun "nodes" on this machine (two separate ``torchrun --nnodes 2
--node_rank {0,1} --nproc_per_node 1`` launches, gloo, CPU) train the same two optimizer steps
as one plain process on the whole batch.

What the two-node run must reproduce, per step: the global batch (each rank trains half of the
single process's images), the loss (mean of the ranks' losses), the gradients the optimizer
sees (after DDP's all-reduce; identical bit for bit on both ranks) and the weights after the
step; at the end, the one ``last.ckpt`` rank 0 writes. That needs ``trainer.num_nodes`` to
reach Lightning (which checks num_nodes x devices against torchrun's world size), the global
``batch_size`` split over the whole world (``per_device_batch``), the training order sharded by
global rank, and the loss's negatives gathered across the nodes.

The comparison is made exact in its terms, not loosened:

- BatchNorm: per-rank batch statistics differ from whole-batch ones, and ``SyncBatchNorm``
  refuses CPU tensors (torch supports it on GPUs only). So the backbone is MobileNetV2 with
  timm's ``norm_layer=layernorm2d``, a per-sample normalisation: nothing in the forward pass
  depends on which images share a batch. Randomly initialised (no weights to load into it).
- KoLeo is off (``loss.entropy_weight=0``; InfoNCE over the global batch stays, so the
  cross-node gather is exercised). A randomly initialised network gives near-identical
  embeddings, and KoLeo's nearest-neighbour distance, ``sqrt(2 - 2 cos)`` from float32
  similarities, then loses most of its digits to cancellation; its gradient follows that
  rounding noise. Measured with KoLeo on: step-1 gradients agreed to 8e-5 (of 11), step-2
  gradients differed by 25%, with the losses still equal to 2e-6 relative. That is the loss's
  conditioning in float32, not the distribution: ``tests/losses/test_infonce_koleo.py`` checks
  KoLeo's loss and gradients on 2 gloo ranks against one process in float64.
- No mixed positives (``loss.mix_fraction=0``): each rank draws its mixing partners among its
  own rows, so mixing is not world-size invariant by design.
- SiLU activations (``act_layer=silu``) instead of MobileNetV2's ReLU6, whose kinks make the
  gradient a discontinuous function of float rounding: with ReLU6, step 1 agreed, but at
  step 2 a pre-activation within rounding of a kink fell on the other side, and a few tensors'
  gradients moved by up to 5.8% of their largest entry (the losses still equal to 1.3e-7
  relative). One process alone did the same when only its thread count changed (``threads=2``
  against ``threads=1``: the same tensors, by the same amounts), so that was summation order,
  not the distribution.
- SGD (not AdamW): after a step the weights differ by ``lr`` x the gradient difference. Adam's
  first step is ``lr * g / (|g| + eps)``, which turns float rounding in a near-zero gradient
  into a difference of up to ``lr``.

Tolerances are float32 rounding only (the runs sum the same terms in another order and batch
split): the loss to 1e-6 relative (a mean of two per-rank means vs one mean; measured 3e-7);
each gradient tensor to 5e-5 of its largest entry (the stem's gradient sums ~4,000 products
per weight over 16 images x 16 x 16 positions; measured at most 3.8e-6 at step 1 and 1.5e-5
at step 2, 2026-12-01); weights to 1e-6
absolute (entries of order 1, lr x gradient difference ~5e-8; measured 1.2e-7, one float32
ulp). Any real difference (another batch, a missing gather) is of order 1e-1 or more.

Tested here: two "nodes" on localhost over gloo only; no two real machines, no GPUs, no SLURM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.config import REPO

STEPS = 2
SETTINGS = [
    "model.train_size=32",
    "model.eval_size=32",
    "model.weights.source=none",
    "+model.model_kwargs.norm_layer=layernorm2d",  # per-sample: no batch statistics
    "+model.model_kwargs.act_layer=silu",  # smooth: no ReLU6 kink for rounding to flip
    "batch_size=8",  # global: 8 images on one process, 4 per node on two
    "num_workers=0",
    "loss.entropy_weight=0",  # KoLeo off (see the module docstring)
    "loss.mix_fraction=0",
    "optim=sgd",
    "optim.warmup_epochs=0",  # both steps move the weights
    "trainer.max_epochs=1",
    f"trainer.limit_train_batches={STEPS}",
    "+trainer.limit_val_batches=0",
    "+trainer.enable_model_summary=false",
    "trainer.precision=32-true",
    "deterministic=true",
    "threads=1",
    "ckpt_path=null",
    "logger.media=false",
    "callbacks=none",
    "+callbacks.probe._target_=multinode_probe.GradientProbe",
]
TWO_NODES = [
    "trainer=ddp",
    "trainer.num_nodes=2",
    "trainer.devices=1",
    "trainer.accelerator=cpu",
    "trainer.sync_batchnorm=false",  # SyncBatchNorm is GPU-only; the model has no BatchNorm
    "augment.work_side=null",  # trainer=ddp's GPU-feeding data settings off: the views of
    "data.decode_min_side=null",  # trainer=cpu, which the one process trains with
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a hung torchrun is killed with its rank
    )


def wait_all(procs: dict[str, tuple[subprocess.Popen, Path]], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    try:
        for name, (proc, log) in procs.items():
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name} exited with {rc}:\n{log.read_text()[-4000:]}"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def probe(out: Path, step: int, rank: int) -> dict:
    return torch.load(out / f"step{step}-rank{rank}.pt", map_location="cpu", weights_only=True)


def assert_same_tensors(got: dict, expected: dict, *, scaled: float = 0.0, atol: float = 0.0):
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        if not want.is_floating_point() or want.numel() == 0:
            assert torch.equal(got[key], want), key
            continue
        tol = atol + scaled * float(want.abs().max())
        torch.testing.assert_close(
            got[key], want, rtol=0, atol=tol, msg=lambda m, k=key: f"{k}: {m}"
        )


@pytest.mark.ddp
@pytest.mark.slow  # 80 s on the 2-core build machine (three trainings at once); make test-all
def test_two_torchrun_nodes_train_the_steps_of_one_process(tiny_minidisc, tmp_path):
    data = [f"data.root={tiny_minidisc}", "data.build_if_missing=false"]
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    port = free_port()
    single_log = tmp_path / "single.log"
    procs = {
        "one process": (
            start(
                [
                    sys.executable,
                    str(REPO / "train.py"),
                    *data,
                    *SETTINGS,
                    "trainer=cpu",
                    f"run_dir={single_dir}",
                    f"+callbacks.probe.out_dir={tmp_path / 'probe1'}",
                ],
                single_log,
            ),
            single_log,
        )  # fmt: skip
    }
    for node in (0, 1):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                    "--node_rank", str(node), "--nproc_per_node", "1",
                    "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip
        log = tmp_path / f"node{node}.log"
        procs[f"node {node}"] = (
            start([*torchrun, str(REPO / "train.py"), *data, *SETTINGS, *TWO_NODES,
                   f"run_dir={multi_dir}", f"+callbacks.probe.out_dir={tmp_path / 'probe2'}"],
                  log),
            log,
        )  # fmt: skip
    wait_all(procs)

    for step in range(1, STEPS + 1):
        one = probe(tmp_path / "probe1", step, 0)
        ranks = [probe(tmp_path / "probe2", step, r) for r in (0, 1)]
        assert one["world_size"] == 1
        assert [(r["world_size"], r["num_nodes"]) for r in ranks] == [(2, 2), (2, 2)]
        # the global batch: each node half of the one process's images
        assert [len(r["index"]) for r in ranks] == [4, 4]
        both = torch.cat([r["index"] for r in ranks])
        assert sorted(both.tolist()) == sorted(one["index"].tolist()), f"step {step}"
        loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
        assert float(loss) == pytest.approx(float(one["loss"]), rel=1e-6), f"step {step}"
        assert_same_tensors(ranks[1]["grads"], ranks[0]["grads"])  # the all-reduced mean
        assert_same_tensors(ranks[0]["grads"], one["grads"], scaled=5e-5)
        assert_same_tensors(ranks[0]["weights"], one["weights"], atol=1e-6)

    def last(run_dir: Path) -> dict:
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)  # fmt: skip
        assert ckpt["global_step"] == STEPS
        return ckpt["state_dict"]

    assert_same_tensors(last(multi_dir), last(single_dir), atol=1e-6)

    # the run dir's records are rank 0's: one launch, node 1 logs to a file of its own
    launches = json.loads((multi_dir / "run_info.json").read_text())["launches"]
    assert len(launches) == 1
    assert (multi_dir / "train_result.json").is_file()
    assert "GLOBAL_RANK: 1" in (multi_dir / "train_rank1.log").read_text()
    assert "GLOBAL_RANK: 1" not in (multi_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "env,rank",
    [
        ({}, 0),
        ({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}, 0),  # torchrun, node 0
        ({"RANK": "1", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, 1),  # torchrun, node 1
        ({"RANK": "0", "SLURM_PROCID": "1"}, 0),  # torchrun under srun: RANK decides
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, 0),  # srun, first task
        ({"SLURM_PROCID": "3", "SLURM_LOCALID": "1"}, 3),  # srun: another node's task
        ({"LOCAL_RANK": "1"}, 1),  # a worker of Lightning's own launcher
        ({"NODE_RANK": "1"}, 1),  # Lightning's launcher on another machine
    ],
)
def test_only_the_first_process_of_a_launch_is_rank_zero(monkeypatch, env, rank):
    """The run-dir lock and the run's records belong to the global rank 0 only: on a shared
    filesystem, no other node's first process takes the lock or writes results."""
    from fisc.train.app import _other_rank_overrides
    from fisc.train.lock import is_rank_zero_process, launch_rank

    for key in ("RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch_rank() == rank
    assert is_rank_zero_process() == (rank == 0)
    assert bool(_other_rank_overrides([])) == (rank > 0)
    # Lightning's launcher names its workers' logs itself
    assert _other_rank_overrides(["hydra.job.name=train_ddp_process_1"]) == []


def _resume_worker(rank: int, init_file: str, cases: dict, out_dir: str) -> None:
    """Each case: this rank's resolved checkpoint and run dir; records the guard's verdict."""
    import torch.distributed as dist

    from fisc.train.resume_guard import ResumeDisagreementError, agree_on_resume

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        verdicts = {}
        for name, per_rank in cases.items():
            resume, run_dir = per_rank[rank]
            try:
                agree_on_resume(resume, run_dir, "auto")
                verdicts[name] = None
            except ResumeDisagreementError as e:
                verdicts[name] = str(e)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(verdicts))
    finally:
        dist.destroy_process_group()


def _checkpoint(path: Path, step: int) -> str:
    """A small Lightning-like checkpoint at ``step``; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((4,), float(step))}}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.ddp
def test_ranks_that_resolve_different_checkpoints_all_refuse_naming_each_choice(tmp_path):
    """Two gloo ranks, each with its own run dir (node-local disks): a copy of one checkpoint
    on each agrees, as do two fresh starts; a node without the checkpoint, or with an older
    one, stops both ranks with one error naming what each resolved."""
    node0, node1 = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    last0, last1 = node0 / "checkpoints" / "last.ckpt", node1 / "checkpoints" / "last.ckpt"
    sha5 = _checkpoint(last0, 5)
    older = node1 / "checkpoints" / "older" / "last.ckpt"
    sha3 = _checkpoint(older, 3)
    last1.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(last0, last1)  # a byte copy, newer mtime: the same checkpoint
    cases = {
        "copies": [(str(last0), str(node0)), (str(last1), str(node1))],
        "fresh": [(None, str(node0)), (None, str(node1))],
        "missing": [(str(last0), str(node0)), (None, str(node1))],
        "older": [(str(last0), str(node0)), (str(older), str(node1))],
    }
    torch.multiprocessing.spawn(
        _resume_worker, args=(str(tmp_path / "init"), cases, str(tmp_path)), nprocs=2
    )
    verdicts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert verdicts[0] == verdicts[1]  # every rank stops alike (none is left waiting)
    verdict = verdicts[0]
    assert verdict["copies"] is None and verdict["fresh"] is None
    host = socket.gethostname()
    rank0 = f"rank 0 on {host}: checkpoints/last.ckpt (step 5, {last0.stat().st_size} bytes, "
    rank0 += f"sha256 {sha5[:16]})"
    for case, rank1 in (
        ("missing", f"rank 1 on {host}: no checkpoint (starts afresh)"),
        ("older", f"rank 1 on {host}: checkpoints/older/last.ckpt (step 3, "
                  f"{older.stat().st_size} bytes, sha256 {sha3[:16]})"),
    ):  # fmt: skip
        error = verdict[case]
        assert error is not None and "resolved different checkpoints" in error, case
        assert rank0 in error and rank1 in error, error
        assert "ckpt_path=auto" in error and "filesystem all nodes share" in error


@pytest.mark.ddp
@pytest.mark.slow  # about a minute on the 2-core build machine: one training, then two ranks
def test_two_nodes_that_see_different_checkpoints_stop_before_training(tiny_minidisc, tmp_path):
    """End to end: node 0's run dir holds the checkpoint of a finished first epoch, node 1's
    (a node-local disk) holds none. Both torchrun ranks stop with the guard's error, and the
    checkpoint is left as it was."""
    data = [f"data.root={tiny_minidisc}", "data.build_if_missing=false"]
    settings = [s for s in SETTINGS if not s.startswith(("ckpt_path=", "+callbacks.probe"))]
    shared, local = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    first = tmp_path / "first.log"
    command = [sys.executable, str(REPO / "train.py"), *data, *settings, "trainer=cpu"]
    wait_all({"first epoch": (start([*command, f"run_dir={shared}"], first), first)})
    last = shared / "checkpoints" / "last.ckpt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()

    port, procs = free_port(), {}
    for node, run_dir in ((0, shared), (1, local)):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                    "--node_rank", str(node), "--nproc_per_node", "1",
                    "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip
        log = tmp_path / f"node{node}.log"
        procs[node] = (start([*torchrun, str(REPO / "train.py"), *data, *settings, *TWO_NODES,
                              f"run_dir={run_dir}", "ckpt_path=auto", "trainer.max_epochs=2"],
                             log), log)  # fmt: skip
    deadline = time.monotonic() + 180  # refused within seconds (a hang without the guard)
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p, _ in procs.values()]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    host = socket.gethostname()
    for (_, log), code in zip(procs.values(), codes, strict=True):
        text = log.read_text()
        assert code != 0, text[-3000:]
        assert "resolved different checkpoints" in text, text[-3000:]
        assert f"rank 0 on {host}: checkpoints/last.ckpt (step {STEPS}," in text
        assert f"rank 1 on {host}: no checkpoint (starts afresh)" in text
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before  # nothing trained or saved
    assert not (local / "checkpoints" / "last.ckpt").exists()
