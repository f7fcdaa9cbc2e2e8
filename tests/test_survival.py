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
from helpers.config import REPO as ROOT

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


def launch(
    root: Path, run_dir: Path, *extra: str, workers: int = 0, batch: int = 8
) -> subprocess.Popen:
    settings = [f"num_workers={workers}" if a.startswith("num_workers=") else a for a in RESUME]
    settings = [f"batch_size={batch}" if a.startswith("batch_size=") else a for a in settings]
    args = [sys.executable, str(ROOT / "train.py"), f"data.root={root}",
            "data.build_if_missing=false", *settings, f"run_dir={run_dir}", *extra]  # fmt: skip
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


def kill_when(
    proc: subprocess.Popen, ready, timeout: float = 300, sig: int = signal.SIGKILL
) -> None:
    """Send ``sig`` to ``proc`` as soon as ``ready()`` holds (polled every millisecond)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "training ended before the kill: " + proc.stdout.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(sig)
    proc.wait()


@pytest.mark.parametrize(
    "workers,sig,where",
    [(0, "SIGKILL", "mid-epoch"), (2, "SIGKILL", "mid-epoch"), (2, "SIGTERM", "epoch-end")],
)
def test_a_kill_then_relaunch_gives_the_uninterrupted_weights(
    tiny_minidisc, tmp_path, uninterrupted, workers, sig, where
):
    """Killed right after a checkpoint (while the next step runs): a random mid-epoch step's,
    or the end of epoch 1 (the newest checkpoint of a run stopped early in epoch 2; SIGTERM
    lets the running step finish first). Relaunched with the same command, the final weights
    are the uninterrupted run's (trained without DataLoader workers: with 2 persistent workers
    the views are the same)."""
    if where == "epoch-end":  # saves: steps 1, 2, end of epoch 0, 4, 5, end of epoch 1, ...
        kill_after = 6
    else:
        kill_after = random.choice([s for s in range(2, STEPS - 1) if s % 3])
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

    proc = launch(tiny_minidisc, run_dir, workers=workers)
    kill_when(proc, saved_enough, sig=getattr(signal, sig))
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < STEPS, f"killed at step {step}"
    out = finish(launch(tiny_minidisc, run_dir, workers=workers))
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out
    assert same_weights(final_state(run_dir), uninterrupted), f"killed after step {step}"


def test_an_epoch_end_kill_resumes_exactly_when_the_epoch_leaves_a_remainder(
    tiny_minidisc, tmp_path
):
    """24 images in batches of 10: each epoch trains 2 batches and drops 4 images. Stopped
    right after the end-of-epoch-0 checkpoint and relaunched with 2 DataLoader workers, the
    run starts epoch 1 afresh and ends with the uninterrupted run's weights (it once took
    that checkpoint for a mid-epoch one, because 2 x 10 < 24, and trained on stale views)."""
    whole = tmp_path / "whole"
    finish(launch(tiny_minidisc, whole, "trainer.max_epochs=3", workers=2, batch=10))
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    seen: set[tuple[int, int]] = set()

    def saved_epoch_end() -> bool:  # saves: step 1, step 2 (= end of epoch 0), ...
        try:
            st = last.stat()
            seen.add((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return len(seen) >= 2

    proc = launch(tiny_minidisc, run_dir, "trainer.max_epochs=3", workers=2, batch=10)
    kill_when(proc, saved_epoch_end)
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 0, (ckpt["global_step"], ckpt["epoch"])
    out = finish(launch(tiny_minidisc, run_dir, "trainer.max_epochs=3", workers=2, batch=10))
    got = torch.load(last, map_location="cpu", weights_only=True)
    assert got["global_step"] == expected["global_step"] == 6, out[-2000:]
    assert same_weights(got["state_dict"], expected["state_dict"])


def test_a_checkpoint_whose_epoch_disagrees_with_its_data_position_is_refused(
    tiny_minidisc, tmp_path, uninterrupted
):
    """The signature of an inexact resume (Lightning one epoch ahead of the data order it
    saved): the relaunch stops before training, with the figures, and writes nothing; the
    same checkpoint untouched goes on to the uninterrupted weights."""
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    versions = {}  # inode -> an open handle: each saved last.ckpt, readable after its rename

    def five_saves() -> bool:  # opening is cheap, so no save is missed between two polls
        try:
            inode = last.stat().st_ino
            if inode not in versions:
                versions[inode] = last.open("rb")
        except FileNotFoundError:
            pass
        return len(versions) >= 5  # steps 1, 2, end of epoch 0 (step 3), 4, 5

    kill_when(launch(tiny_minidisc, run_dir), five_saves)
    saved = []
    for f in versions.values():
        with f:
            saved.append(torch.load(f, map_location="cpu", weights_only=True))
    (ckpt,) = [c for c in saved if c["global_step"] == 3]  # the end of epoch 0
    torch.save(ckpt, last)
    good = last.read_bytes()
    for side in ckpt["loops"]["fit_loop"]["epoch_progress"].values():
        for key in side:
            side[key] += 1
    torch.save(ckpt, last)
    bad = last.read_bytes()
    proc = launch(tiny_minidisc, run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "cannot resume exactly" in out and "epoch 1, batch 0 of 3" in out, out[-3000:]
    assert "Lightning would go on at epoch 2, step 3" in out, out[-3000:]
    assert last.read_bytes() == bad, "a refused resume rewrote last.ckpt"
    last.write_bytes(good)
    out = finish(launch(tiny_minidisc, run_dir))
    assert "resumed at epoch 1, batch 0 of 3 (step 3)" in out
    assert same_weights(final_state(run_dir), uninterrupted)


def _resuming(saved_at, batches_per_epoch, lightning_at, accumulate=1):
    """A trainer stub as ResumeCheck sees it: the data position the checkpoint saved
    (``(epoch, batches done)``), this launch's batches an epoch, and Lightning's restored
    ``(epoch, global step)``."""
    from types import SimpleNamespace

    epoch, step = lightning_at
    return SimpleNamespace(datamodule=SimpleNamespace(resumed_at=saved_at),
                           num_training_batches=batches_per_epoch, current_epoch=epoch,
                           global_step=step, accumulate_grad_batches=accumulate)  # fmt: skip


def test_a_resume_onto_data_of_another_size_is_refused():
    """The other half of the exact-resume guard (the launch-level test above changes the loop
    state): a checkpoint saved after 2 of 3 batches of epoch 1 (Lightning at step 3 + 2 = 5)
    goes on with the data it was saved with, and is refused once the data gives 4 or 2 batches
    an epoch, when Lightning's step no longer matches the saved position."""
    from fisc.train.datamodule import ResumeCheck

    same = _resuming((1, 2), 3, (1, 5))
    ResumeCheck().on_train_start(same, None)
    assert same.datamodule.resumed_at is None  # checked once
    grown = _resuming((1, 2), 4, (1, 5))
    with pytest.raises(RuntimeError, match="cannot resume exactly") as e:
        ResumeCheck().on_train_start(grown, None)
    assert "epoch 1, batch 2 of 4 (step 6 if every epoch had 4 batches)" in str(e.value)
    assert "Lightning would go on at epoch 1, step 5" in str(e.value)
    assert "changed size" in str(e.value)
    # shrunk to 2 batches an epoch: the saved position is epoch 1's end, so epoch 2, step 4
    with pytest.raises(RuntimeError, match=r"epoch 2, batch 0 of 2 \(step 4 "):
        ResumeCheck().on_train_start(_resuming((1, 2), 2, (1, 5)), None)
    # the checks that let a resume through: an ended epoch goes on at the next one's start,
    # steps count optimizer steps (two batches a step), and a fresh run is not checked
    ResumeCheck().on_train_start(_resuming((0, 3), 3, (1, 3)), None)
    ResumeCheck().on_train_start(_resuming((1, 2), 4, (1, 3), accumulate=2), None)
    ResumeCheck().on_train_start(_resuming(None, 3, (1, 5)), None)


def test_sigkill_during_a_checkpoint_write_then_relaunch_continues(
    tiny_minidisc, tmp_path, uninterrupted
):
    """Killed while a checkpoint's temporary file is being written: last.ckpt is still a
    complete checkpoint, and the relaunch finishes with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"

    def writing() -> bool:
        return any(ckpt_dir.glob(".last.ckpt.*.tmp")) and (ckpt_dir / "last.ckpt").is_file()

    proc = launch(tiny_minidisc, run_dir)
    kill_when(proc, writing)
    step = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < step["global_step"] < STEPS
    finish(launch(tiny_minidisc, run_dir))
    assert not list(ckpt_dir.glob(".*.tmp")), "the interrupted write's temporary file is left"
    assert same_weights(final_state(run_dir), uninterrupted)


# -- safe loading ---------------------------------------------------------------------------


class Payload:
    """Unpickling it would create ``marker``: proof that a load ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped file whose unpickling runs code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": 1, "x": Payload(marker)}, path)
    return path


def refused(call, path: Path, marker: Path) -> None:
    from fisc.checkpoints import UnsafeCheckpointError

    with pytest.raises(UnsafeCheckpointError) as e:
        call()
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists(), "code from the checkpoint ran"


def test_a_crafted_pickle_is_refused_in_every_position(compose_cfg, tiny_minidisc, tmp_path):
    """resume (ckpt_path and a run's last.ckpt), init_from, extraction, freezing, a moved
    run's best checkpoint and a backbone weights file: each refuses a checkpoint that needs
    unpickling, naming it, and no code runs. (The payload does run under a plain torch.load:
    the test is live.)"""
    from fisc.export.freeze import freeze
    from fisc.inference import DescriptorPipeline
    from fisc.models.weights import read_state_dict
    from fisc.provenance import sha256_of
    from fisc.train.records import _moved_best
    from fisc.train.run import train

    marker = tmp_path / "ran"
    bad = crafted(tmp_path / "evil.ckpt", marker)
    torch.load(bad, weights_only=False)
    assert marker.exists()
    marker.unlink()

    def cfg(run_dir, *extra):
        return compose_cfg(f"data.root={tiny_minidisc}", "data.build_if_missing=false",
                           *RESUME[:5], "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                           "logger.media=false", f"run_dir={run_dir}", *extra)  # fmt: skip

    refused(lambda: train(cfg(tmp_path / "a", f"ckpt_path={bad}")), bad, marker)
    last = crafted(tmp_path / "b" / "checkpoints" / "last.ckpt", marker)
    refused(lambda: train(cfg(tmp_path / "b", "ckpt_path=auto")), last, marker)
    refused(lambda: train(cfg(tmp_path / "c", f"init_from={bad}")), bad, marker)
    refused(lambda: DescriptorPipeline.from_checkpoint(bad), bad, marker)
    refused(lambda: freeze(bad, tmp_path / "artifact"), bad, marker)
    # a moved run's best checkpoint, looked up in the new folder to read its score
    best = crafted(tmp_path / "moved" / "checkpoints" / "best-epoch000.ckpt", marker)
    old = tmp_path / "gone" / "checkpoints" / best.name
    refused(lambda: _moved_best(best.parent, old, None), best, marker)
    # a backbone weights file (model.weights.source=file), with and without its checksum
    refused(lambda: read_state_dict(str(bad)), bad, marker)
    refused(lambda: read_state_dict(str(bad), sha256_of(bad)), bad, marker)


# -- one writer per run dir -----------------------------------------------------------------


def test_a_second_launch_into_a_busy_run_dir_is_refused_and_a_stale_lock_taken_over(
    compose_cfg, tiny_minidisc, tmp_path, caplog
):
    import json

    from fisc.train.lock import RunDirBusyError, RunLock
    from fisc.train.run import train

    run_dir = tmp_path / "run"
    cfg = compose_cfg(f"data.root={tiny_minidisc}", "data.build_if_missing=false", *RESUME[:5],
                      "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                      "logger.media=false", f"run_dir={run_dir}")  # fmt: skip
    holder = subprocess.Popen(  # another process holds the run dir
        [sys.executable, "-c", "import sys, time; from fisc.train.lock import RunLock\n"
         "with RunLock(sys.argv[1]):\n print('held', flush=True); time.sleep(600)",
         str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusyError, match=f"PID {holder.pid} on "):
            train(cfg)
        assert not (run_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # its holder was killed: the lock file still names it, but nobody holds it
    assert json.loads((run_dir / ".lock").read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"):
        result = train(cfg)
    assert result.last_checkpoint is not None
    assert any(f"stale lock of PID {holder.pid}" in r.getMessage() for r in caplog.records)
    with RunLock(run_dir), pytest.raises(RunDirBusyError):  # and in one process, twice
        RunLock(run_dir).__enter__()


def test_a_killed_launch_s_forked_children_do_not_keep_its_run_dir_locked(tmp_path):
    """A launch holding the lock forks a child (as DataLoader workers are forked) and is
    killed; the child lives on. The run dir is free at once: the child shares the lock's open
    file only until the fork, not the lock (the relaunch of a killed demo was refused as busy
    for the seconds its orphaned workers took to exit)."""
    from fisc.train.lock import RunLock

    # the child prints its PID itself: by then its after-fork hooks have run (the parent
    # printing it raced them on a loaded machine, and the test saw the lock still held)
    code = (
        "import os, sys, time\nfrom fisc.train.lock import RunLock\n"
        "with RunLock(sys.argv[1]):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        print(os.getpid(), flush=True)\n        time.sleep(120)\n        os._exit(0)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the forked child is still alive
        with RunLock(tmp_path):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


# -- broken images --------------------------------------------------------------------------


def test_bad_images_are_skipped_by_default_on_real_data_but_not_on_minidisc(compose_cfg):
    """DISC21 and image folders (millions of files, some broken) skip a bad image by default;
    minidisc, generated here, stops on one (a broken image there is a bug to see)."""
    skip = {
        d: compose_cfg(f"data={d}").data.skip_bad_images for d in ("disc21", "folder", "minidisc")
    }
    assert skip == {"disc21": True, "folder": True, "minidisc": False}


def test_broken_training_images_are_skipped_listed_and_capped(compose_cfg, tiny_minidisc, tmp_path):
    """A folder of 24 training images, 2 of them broken: training completes and lists exactly
    those 2 in skipped_images.txt (found by the data workers); with a cap below 2 it stops,
    naming them."""
    import shutil

    from fisc.train.datamodule import TooManyBadImagesError
    from fisc.train.run import train

    folder = tmp_path / "train"
    shutil.copytree(tiny_minidisc / "images" / "training", folder)
    files = sorted(folder.iterdir())
    broken = [files[3], files[17]]
    broken[0].write_bytes(b"")  # zero bytes
    broken[1].write_bytes(files[5].read_bytes()[:200])  # truncated

    def cfg(run, fraction):
        return compose_cfg("data=folder", f"data.root={folder}", *RESUME[:4], "num_workers=1",
                           "trainer.max_epochs=2", f"data.max_bad_fraction={fraction}",
                           "logger.media=false", f"run_dir={tmp_path / run}")  # fmt: skip

    assert cfg("x", 0.1).data.skip_bad_images is True  # the folder default
    result = train(cfg("ok", 0.1))  # 2 of 24 allowed
    assert result.last_checkpoint is not None
    listed = (tmp_path / "ok" / "skipped_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == [str(p) for p in broken]
    with pytest.raises(TooManyBadImagesError, match=str(broken[0])):
        train(cfg("capped", 0.05))  # 1 of 24 allowed


# -- full disk, read-only dir ---------------------------------------------------------------


def test_a_full_disk_is_refused_before_training_and_a_failed_write_keeps_the_old_file(
    compose_cfg, tiny_minidisc, tmp_path, monkeypatch
):
    import errno
    import shutil
    from collections import namedtuple

    import fisc.checkpoints as ckpts
    from fisc.train.run import train

    run_dir = tmp_path / "run"
    cfg = compose_cfg(f"data.root={tiny_minidisc}", "data.build_if_missing=false",
                      *RESUME[:5], "trainer.max_epochs=1", f"run_dir={run_dir}")  # fmt: skip
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(OSError, match="1.0 MB free"):  # a checkpoint here is ~30 MB
        train(cfg)
    assert not list(run_dir.rglob("*.ckpt"))
    monkeypatch.undo()

    # the disk fills up while a checkpoint is written: the previous one stays, whole
    path = tmp_path / "last.ckpt"
    ckpts.atomic_save({"step": 1}, path)

    def full(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        ckpts.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert ckpts.load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_unwritable_run_dir_is_refused_before_training(compose_cfg, tmp_path):
    from fisc.train.run import train

    blocker = tmp_path / "file"
    blocker.write_text("a file where the run dir's parent should be")
    cfg = compose_cfg(f"run_dir={blocker / 'run'}", "data.build_if_missing=false")
    with pytest.raises(OSError, match="not writable"):
        train(cfg)


def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_readable_one(tmp_path, caplog):
    """A last.ckpt cut short (by a writer without fisc's atomic rename, or a disk fault): the
    relaunch resumes from the readable checkpoint with the highest step, and says so."""
    from fisc.train.resume import resume_path

    ckpt_dir = tmp_path / "checkpoints"
    for name, step in [("best-epoch000.ckpt", 3), ("history/epoch001-step000006.ckpt", 6),
                       ("history/epoch000-step000003.ckpt", 3)]:  # fmt: skip
        (ckpt_dir / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": step, "state_dict": {}}, ckpt_dir / name)
    torch.save({"global_step": 9, "state_dict": {"w": torch.zeros(1000)}}, ckpt_dir / "last.ckpt")
    whole = (ckpt_dir / "last.ckpt").read_bytes()
    assert resume_path("auto", ckpt_dir) == str(ckpt_dir / "last.ckpt")
    (ckpt_dir / "last.ckpt").write_bytes(whole[: len(whole) // 2])
    with caplog.at_level("WARNING"):
        chosen = resume_path("auto", ckpt_dir)
    assert chosen == str(ckpt_dir / "history" / "epoch001-step000006.ckpt")
    assert any("unreadable" in r.getMessage() and chosen in r.getMessage() for r in caplog.records)


def test_a_folder_given_as_a_checkpoint_says_what_it_is(tmp_path):
    from fisc.checkpoints import load_checkpoint

    artifact, run, other = tmp_path / "artifact", tmp_path / "run", tmp_path / "other"
    (artifact).mkdir()
    (artifact / "MANIFEST.sha256").write_text("")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    other.mkdir()
    with pytest.raises(IsADirectoryError, match="frozen artifact.*--artifact"):
        load_checkpoint(artifact)
    with pytest.raises(IsADirectoryError, match=r"run folder, whose checkpoint is .*last\.ckpt"):
        load_checkpoint(run)
    with pytest.raises(IsADirectoryError, match="not a checkpoint file"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.ckpt")
