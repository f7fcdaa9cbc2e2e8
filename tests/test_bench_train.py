"""``benchmarks/bench_train.py``'s loader timing window."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"
_spec = importlib.util.spec_from_file_location("bench_train", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


class _Sampler:
    epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch


class _Data:
    """A data module whose loader yields batches of 1, 2, 3, ... views a side, 4 an epoch."""

    def __init__(self, num_workers):
        self.num_workers, self.sampler, self.pulled = num_workers, _Sampler(), []

    def train_dataloader(self):
        return self  # iterable again, epoch by epoch, as a DataLoader is

    def __iter__(self):
        start = 4 * self.sampler.epoch
        for k in range(start + 1, start + 5):
            self.pulled.append(k)
            yield torch.zeros(k), torch.zeros(k)


def test_the_loader_is_timed_after_its_warm_batches(monkeypatch):
    """The clock starts when the last warm batch arrives (one per worker, or ``warm_batches``
    if more) and counts both views of the batches after it, across an epoch's end."""
    clock = itertools.count()  # each reading one second later
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    dm = _Data(num_workers=2)
    assert bench.loader_rate(dm, batches=3) == 2 * (3 + 4 + 5)  # views over 1 s
    assert dm.pulled == [1, 2, 3, 4, 5]  # the next epoch's first batch is the fifth
    dm = _Data(num_workers=2)
    assert bench.loader_rate(dm, batches=2, warm_batches=5) == 2 * (6 + 7)
    assert dm.pulled == [1, 2, 3, 4, 5, 6, 7]
    assert bench.loader_rate(_Data(num_workers=0), batches=1) == 2 * 2  # at least one warm
