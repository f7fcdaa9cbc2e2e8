"""Every rank of a distributed launch resumes from the same checkpoint, or none trains.

With ``ckpt_path=auto`` each rank resolves ``<run_dir>/checkpoints/last.ckpt`` on its own
view of the filesystem. On node-local disks, with a node that misses the file or holds an older
one, the ranks would start from different states and DDP would go on without a word (it
averages gradients, it does not compare weights). So when the trainer starts, after the process
group exists and before any checkpoint is loaded, every rank tells the others what it resolved
(``all_gather_object``): the path (relative to its run dir), the file's size, global step and
sha256. If any two differ in content (sha256, or a checkpoint against none), every rank stops
with the same error, which names each rank's choice; nothing is loaded or trained.

The sha256 reads the checkpoint once more on each rank (about a second per GB; the resume
reads it right after, from the page cache). A file is told apart by its content, not its name or
time: node-local copies of one checkpoint agree.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist

from fisc.checkpoints import checkpoint_step


class ResumeDisagreementError(RuntimeError):
    """The ranks of one launch resolved different checkpoints to resume from."""


@dataclass(frozen=True)
class ResumeChoice:
    """What one rank resolved: ``path`` is ``None`` for a fresh start."""

    rank: int
    host: str
    path: str | None  # relative to the rank's run dir when inside it
    size: int | None = None
    step: int | None = None
    sha256: str | None = None
    error: str | None = None  # the file could not be read: reported, never raised alone

    @property
    def key(self) -> tuple:
        """What must be equal on every rank: the content resumed (none for a fresh start)."""
        return (self.path is not None, self.sha256, self.error)

    def describe(self) -> str:
        where = f"rank {self.rank} on {self.host}: "
        if self.path is None:
            return where + "no checkpoint (starts afresh)"
        if self.error is not None:
            return where + f"{self.path} (unreadable: {self.error})"
        step = "?" if self.step is None or self.step < 0 else self.step
        return where + f"{self.path} (step {step}, {self.size} bytes, sha256 {self.sha256[:16]})"


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resume_choice(resume: str | None, run_dir: str | Path, rank: int) -> ResumeChoice:
    """This rank's choice. Never raises: an unreadable file is recorded, so that the ranks
    still meet in the collective and all stop together."""
    host = socket.gethostname()
    if resume is None:
        return ResumeChoice(rank, host, None)
    path = Path(resume)
    try:
        shown = str(path.resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:  # a ckpt_path outside the run dir: shown as given
        shown = str(path)
    try:
        step = checkpoint_step(path)
    except Exception:  # a step is only informative; the content decides
        step = None
    try:
        return ResumeChoice(rank, host, shown, os.path.getsize(path), step, _sha256(path))
    except OSError as e:
        return ResumeChoice(rank, host, shown, error=f"{type(e).__name__}: {e}")


def check_agreement(choices: list[ResumeChoice], ckpt_path: str | None = "auto") -> None:
    """Raise :class:`ResumeDisagreementError` naming every rank's choice unless all resume the
    same content (or all start afresh)."""
    if len({c.key for c in choices}) <= 1:
        return
    lines = "\n".join(f"  {c.describe()}" for c in sorted(choices, key=lambda c: c.rank))
    raise ResumeDisagreementError(
        f"the ranks of this launch resolved different checkpoints to resume from "
        f"(ckpt_path={ckpt_path}), so they would train from different states:\n{lines}\n"
        f"Every rank must see the same run dir: put paths.output_dir (or run_dir) on a "
        f"filesystem all nodes share, or give every node the same file (ckpt_path=<path>). "
        f"Nothing was loaded or trained."
    )


def agree_on_resume(resume: str | None, run_dir: str | Path, ckpt_path: str | None) -> None:
    """In a process group of several ranks: gather every rank's choice and check them
    (:func:`check_agreement`; all ranks raise alike). Outside one, nothing to compare."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    mine = resume_choice(resume, run_dir, dist.get_rank())
    choices: list[ResumeChoice | None] = [None] * dist.get_world_size()
    dist.all_gather_object(choices, mine)
    check_agreement([c for c in choices if c is not None], ckpt_path)


class ResumeAgreement(pl.Callback):
    """:func:`agree_on_resume` in ``setup``: Lightning calls it on every rank once the process
    group is up and before it restores the checkpoint."""

    def __init__(self, resume: str | None, run_dir: str | Path, ckpt_path: str | None):
        self.resume, self.run_dir, self.ckpt_path = resume, run_dir, ckpt_path

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            agree_on_resume(self.resume, self.run_dir, self.ckpt_path)
