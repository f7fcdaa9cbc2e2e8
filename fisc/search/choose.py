"""Which exact-search backend ``auto`` uses on the CPU: the one measured faster on this machine.

Both backends return the same neighbours (distances refined in float64, ties broken by index),
so the choice is a matter of speed only, and which one is faster depends on the machine: the
BLAS each library ships, its kernels for this CPU, the thread count. Instead of a fixed rule,
fisc times both once on a probe search (:data:`PROBE`: 1,024 queries x 16,384 references x 256
dimensions, 64 neighbours, best of three) and caches the result with the reason in
``$FISC_CACHE_DIR/search_backend.json`` (default ``~/.cache/fisc``), one entry per key: the
CPU model, the usable cores, torch's thread count and the torch and faiss versions; a key not
yet seen measures again. ``FISC_SEARCH_BACKEND=faiss|torch`` pins the choice without
measuring. An unreadable cache is measured again, an unwritable one is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROBE = (1024, 16384, 256, 64)  # queries, references, dimensions, neighbours
CHOICES = ("faiss", "torch")
_memo: dict[str, tuple[str, str]] = {}


def cache_path() -> Path:
    root = os.environ.get("FISC_CACHE_DIR") or Path.home() / ".cache" / "fisc"
    return Path(root) / "search_backend.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_key() -> dict:
    """What the measurement depends on; a cached choice holds only for the same key."""
    import faiss
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
    }


def measure(probe: tuple[int, int, int, int] = PROBE, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each backend's k-NN search on random data of ``probe``'s
    shape, after one untimed call (library loading and thread start-up are not counted)."""
    from fisc.search.backends import search_knn

    nq, nr, d, k = probe
    rng = np.random.default_rng(0)
    q = rng.standard_normal((nq, d), dtype=np.float32)
    r = rng.standard_normal((nr, d), dtype=np.float32)
    seconds = {}
    for backend in CHOICES:
        search_knn(q[:64], r, k, backend, "cpu", 4096, 16384, True)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            search_knn(q, r, k, backend, "cpu", 4096, 16384, True)
            best = min(best, time.perf_counter() - t)
        seconds[backend] = best
    return seconds


def _records(path: Path) -> list:
    """The cached measurements, one per machine key (e.g. one per torch thread count)."""
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        log.warning("search backend cache %s is unreadable (%s): measuring again", path, e)
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _read(path: Path, key: dict) -> dict | None:
    for record in _records(path):
        if record.get("key") == key and record.get("choice") in CHOICES:
            return record
    return None


def _write(path: Path, record: dict) -> None:
    from fisc.files import write_json

    others = [r for r in _records(path) if r.get("key") != record["key"]]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, [*others, record])
    except OSError as e:
        log.warning("could not cache the search backend choice in %s (%s)", path, e)


def cpu_backend(measure_fn: Callable[[], dict[str, float]] = measure) -> tuple[str, str]:
    """``(backend, reason)`` for ``auto`` on the CPU. Without faiss: torch."""
    pinned = os.environ.get("FISC_SEARCH_BACKEND")
    if pinned:
        if pinned not in CHOICES:
            raise ValueError(f"FISC_SEARCH_BACKEND must be one of {CHOICES}, got {pinned!r}")
        return pinned, "pinned by FISC_SEARCH_BACKEND"
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "torch", "faiss is not installed"
    path = cache_path()
    if str(path) in _memo:
        return _memo[str(path)]
    key = machine_key()
    cached = _read(path, key)
    if cached is None:
        t0 = time.perf_counter()
        seconds = measure_fn()
        choice = min(CHOICES, key=lambda b: seconds[b])
        cached = {
            "key": key,
            "choice": choice,
            "seconds": seconds,
            "probe": dict(zip(("queries", "references", "dims", "k"), PROBE, strict=True)),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _write(path, cached)
        log.info("search backend: measured in %.1f s, cached in %s", time.perf_counter() - t0, path)
        log.info("search backend auto -> %s (faiss %.3f s, torch %.3f s on the probe)",
                 choice, seconds["faiss"], seconds["torch"])  # fmt: skip
    s = cached["seconds"]
    reason = (f"measured faster on this machine ({', '.join(f'{b} {s[b]:.3f} s' for b in CHOICES)}"
              f" on the probe search; {path})")  # fmt: skip
    _memo[str(path)] = (cached["choice"], reason)
    log.debug("search backend auto -> %s: %s", cached["choice"], reason)
    return cached["choice"], reason
