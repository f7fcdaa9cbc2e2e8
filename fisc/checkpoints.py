"""Reading and writing checkpoints safely: the one place fisc calls ``torch.load``.

- :func:`load_checkpoint` reads with ``weights_only=True``: tensors and plain containers only.
  A file that needs unpickling anything else is refused (:class:`UnsafeCheckpointError`, which
  names the file); no Python code in a checkpoint ever runs. A truncated or corrupt file raises
  :class:`CorruptCheckpointError`, which names it too.
- :func:`atomic_save`: each file is written beside its destination (same filesystem), flushed
  to disk, then renamed over it, so a kill at any moment leaves either the previous complete
  file or the new complete one (``fisc.train.checkpointing.AtomicCheckpointIO`` makes it
  Lightning's checkpoint writer).
- :func:`newest_valid_checkpoint`: the fallback when a run's ``last.ckpt`` is unreadable.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from fisc.files import atomic_path

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that fisc will not or cannot load."""


class UnsafeCheckpointError(CheckpointError):
    pass


class CorruptCheckpointError(CheckpointError):
    pass


def load_checkpoint(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with errors that name the file.
    ``what`` says which file it is in the messages (``init_from``, ``weights file``, ...);
    ``mmap``: map the tensors instead of reading them (a cheap check of the file's structure)."""
    path = Path(path)
    if path.is_dir():
        hint = "name the .ckpt file in it"
        if (path / "MANIFEST.sha256").is_file():
            hint = "it is a frozen artifact: pass it as one (fisc extract --artifact DIR)"
        elif (path / "checkpoints" / "last.ckpt").is_file():
            hint = f"it is a run folder, whose checkpoint is {path / 'checkpoints' / 'last.ckpt'}"
        raise IsADirectoryError(f"{what} {path} is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{what} {path} refused: it stores Python objects beyond tensors and plain "
            f"containers, which fisc never writes, and unpickling them could run code. Use a "
            f"checkpoint written by fisc (or a plain state dict / safetensors file). "
            f"({_first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CorruptCheckpointError(
            f"{what} {path} is unreadable (truncated or corrupt): {_first_line(e)}"
        ) from e


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none (torch raises a
    bare ``EOFError`` for a zero-byte file)."""
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a file beside ``path``, fsync, rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def readable(path: Path) -> bool:
    """False for a truncated or corrupt file; an unsafe one raises (it is refused, not
    skipped)."""
    try:
        load_checkpoint(path, mmap=True)  # the tensors are read once, by the resume itself
    except CorruptCheckpointError:
        return False
    return True


def checkpoint_step(path: Path) -> int:
    """The global step a Lightning checkpoint was saved at (-1: not a training checkpoint)."""
    state = load_checkpoint(path, mmap=True)
    return int(state.get("global_step", -1)) if isinstance(state, dict) else -1


def newest_valid_checkpoint(ckpt_dir: Path, exclude: Path | None = None) -> Path | None:
    """The readable training checkpoint under ``ckpt_dir`` (history included) with the
    highest global step, ``exclude`` aside."""
    best, best_step = None, -1
    for path in sorted(ckpt_dir.rglob("*.ckpt")):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            step = checkpoint_step(path)
        except CorruptCheckpointError:
            log.warning("skipping unreadable checkpoint %s", path)
            continue
        if step > best_step:
            best, best_step = path, step
    return best


def remove_stale_partials(run_dir: Path) -> None:
    """Temporary files of writes a kill interrupted (only the run dir's lock holder calls)."""
    for tmp in run_dir.rglob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink(missing_ok=True)


def check_output_dir(run_dir: Path, need_bytes: int) -> None:
    """A clear error before training when the run dir cannot take a checkpoint: not
    writable, or with less free space than ``need_bytes`` (about two checkpoints)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"fisc")
    except OSError as e:
        raise OSError(f"run dir {run_dir} is not writable: {e.strerror}") from e
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise OSError(
            f"run dir {run_dir} has {free / 1e6:.1f} MB free; a checkpoint needs about "
            f"{need_bytes / 2e6:.1f} MB and fisc keeps the previous one until the new one is "
            f"complete: free space or choose another run_dir"
        )
