"""One writer per run dir: ``<run_dir>/.lock``, held (``flock``) for the whole training launch.

The file names its holder (host, PID, start time). A second launch into a busy run dir is
refused with that name. The kernel drops an ``flock`` when its process dies, however it dies,
so a lock file left by a killed launch is stale by construction: the next launch takes it over
and says whose it was. (On filesystems without ``flock`` support the lock cannot be taken and
training is refused, with the reason: choose a local ``run_dir``.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD: set[int] = set()  # this process's lock fds


def _close_in_child() -> None:
    # a forked child (a DataLoader worker) shares the lock's open file, and an flock lasts
    # until every descriptor of it is closed: without this, a launch killed by SIGKILL kept its
    # run dir locked until its orphaned workers noticed and exited, seconds later
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunDirBusyError(RuntimeError):
    """Another process is training into this run dir."""


def _holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _describe(info: dict) -> str:
    return f"PID {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')}"


class RunLock:
    """``with RunLock(run_dir): ...``: exclusive use of ``run_dir`` for this process."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OSError(
                f"run dir {self.path.parent} is not writable ({e.strerror}): choose another run_dir"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusyError(
                f"run dir {self.path.parent} is in use by {_describe(self._read())} "
                f"(lock {self.path}). Wait for it to finish, stop it, or train into another "
                f"run_dir."
            ) from None
        except OSError as e:
            os.close(fd)
            raise RunDirBusyError(
                f"cannot lock run dir {self.path.parent} ({e.strerror}): its filesystem does "
                f"not support file locks; use a run_dir on a local filesystem"
            ) from e
        previous = self._read()
        if previous.get("pid") not in (None, os.getpid()):
            log.warning("taking over the stale lock of %s on %s", _describe(previous), self.path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:  # empty it first: a reader never sees our name once we have let go
            os.ftruncate(self._fd, 0)
        finally:
            _HELD.discard(self._fd)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}


def live_holder(run_dir: str | Path) -> dict | None:
    """The launch training into ``run_dir`` now, as its lock file names it (host, PID, start
    time), without touching the lock; None when the lock is free (a finished launch empties the
    file) or stale (its PID is gone from this host). A holder on another host cannot be
    checked from here and counts as live."""
    info = RunLock(run_dir)._read()
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    if info.get("host") != socket.gethostname():
        return info
    try:
        os.kill(pid, 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, under another user
        pass
    return info


def is_rank_zero_process() -> bool:
    """The global rank 0 of a launch, or a launch of one process: the one process that locks
    the run dir and writes the run's records. Read from the launcher's environment, so that it
    holds before the process group exists; every other rank, on this node or another, shares
    rank 0's run dir and writes nothing of its own there."""
    return launch_rank() == 0


def launch_rank() -> int:
    """This process's rank as its launcher tells it: 0 for the first process of a distributed
    launch or for a plain one, else a positive number (the global rank where it is known).

    torchrun sets ``RANK`` (the global rank; with a c10d rendezvous it need not follow SLURM's
    task order, so it decides when set). Otherwise srun's ``SLURM_PROCID`` is the global rank
    (Lightning's SLURM environment reads it), and Lightning's own launcher marks its workers
    with ``LOCAL_RANK`` and the other machines with ``NODE_RANK``."""
    env = os.environ
    if env.get("RANK", "").strip().isdigit():
        return int(env["RANK"])
    others = [env.get(k, "0").strip() or "0" for k in ("SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")]
    if all(v == "0" for v in others):
        return 0
    return int(others[0]) if others[0].isdigit() and int(others[0]) > 0 else 1
