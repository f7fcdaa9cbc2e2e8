"""Training survives: SIGKILL at any step (also mid-checkpoint-write) and a relaunch give the
uninterrupted run's weights bit for bit; no checkpoint load runs code; one writer per run dir;
broken images are skipped up to a cap."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO as ROOT

# 3 batches per epoch (24 images / 8), 4 epochs: 12 steps; last.ckpt after every step; the
# mixed positives and the cross-batch memory make the steps depend on the RNG and loss state
RESUME = [
    "model.train_size=32",
    "model.eval_size=32",
    "batch_size=8",
    "eval_batch_size=16",
    "num_workers=0",
    "trainer.max_epochs=4",
    "trainer.check_val_every_n_epoch=4",
    "+trainer.enable_model_summary=false",
    "loss.mix_fraction=0.25",
    "loss.memory_size=16",
    "checkpoint_every_n_steps=1",
    "deterministic=true",
    "threads=1",
    "ckpt_path=auto",
    "logger.media=false",
]
STEPS = 12


def launch(root: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "train.py"), f"data.root={root}",
            "data.build_if_missing=false", *RESUME, f"run_dir={run_dir}", *extra]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def final_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tiny_minidisc, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    finish(launch(tiny_minidisc, run_dir))
    return final_state(run_dir)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every millisecond)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "training ended before the kill: " + proc.stdout.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_gives_the_uninterrupted_weights(
    tiny_minidisc, tmp_path, uninterrupted
):
    """Killed right after a random mid-epoch step's checkpoint (while the next step runs),
    relaunched with the same command: the final weights are the uninterrupted run's."""
    kill_after = random.choice([s for s in range(2, STEPS - 1) if s % 3])  # not an epoch end
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    seen: set[int] = set()

    def saved_enough() -> bool:  # every save is a new file renamed into place: a new inode
        try:
            st = last.stat()
            seen.add((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return len(seen) >= kill_after

    proc = launch(tiny_minidisc, run_dir)
    kill_when(proc, saved_enough)
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < STEPS, f"killed at step {step}"
    out = finish(launch(tiny_minidisc, run_dir))
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out
    assert same_weights(final_state(run_dir), uninterrupted), f"killed after step {step}"


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_relaunch_continues(
    tiny_minidisc, tmp_path, uninterrupted
):
    """Killed while a checkpoint's temporary file is being written: last.ckpt is still a
    complete checkpoint, and the relaunch finishes with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    writes = 0

    def writing() -> bool:
        nonlocal writes
        if any(ckpt_dir.glob(".last.ckpt.*.tmp")):
            writes += 1
            return writes >= 1 and (ckpt_dir / "last.ckpt").is_file()
        return False

    proc = launch(tiny_minidisc, run_dir)
    kill_when(proc, writing)
    step = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < step["global_step"] < STEPS
    finish(launch(tiny_minidisc, run_dir))
    assert not list(ckpt_dir.glob(".*.tmp")), "the interrupted write's temporary file is left"
    assert same_weights(final_state(run_dir), uninterrupted)
