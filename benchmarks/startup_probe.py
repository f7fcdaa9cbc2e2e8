"""A Lightning callback for ``benchmarks/bench_startup.py --train``, imported by the training
process it launches (``+callbacks.startup_probe._target_=startup_probe.Milestones``, with
``benchmarks/`` on ``PYTHONPATH``): appends the wall-clock time of each start-up milestone to
a JSON-lines file, so the benchmark can tell how long a launch takes to reach its first
training step, and where that time goes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pytorch_lightning import Callback


class Milestones(Callback):
    """``{"event": name, "time": time.time()}`` lines in ``out``: ``callbacks`` (this object
    built, by fisc's config check: imports done, config composed and checked), ``fit_start``
    (data resolved; data module, model and trainer built), ``train_start`` (after the sanity
    check, loggers up) and ``first_batch`` (the first training batch handed to the step:
    workers started, first views made)."""

    def __init__(self, out: str):
        self.out = Path(out)
        self._seen: set[str] = set()
        self._mark("callbacks")

    def _mark(self, event: str) -> None:
        if event in self._seen:
            return
        self._seen.add(event)
        with self.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "time": time.time()}) + "\n")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._mark("fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._mark("train_start")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._mark("first_batch")
