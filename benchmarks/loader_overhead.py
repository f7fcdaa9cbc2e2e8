"""What the training DataLoader costs beyond making the views: the same views made in this
process on one core, by a loader with one worker, and by a loader with ``--workers`` workers
(per worker), rounds interleaved, with the training process's own CPU share while the loader
runs.

    python benchmarks/loader_overhead.py                     # minidisc, disc_full, 96 px
    python benchmarks/loader_overhead.py --data disc21like --size 224 -- augment.work_side=1

With one worker on a machine with a core to spare, the loader's rate per worker next to the
one-core rate in this process is the loader's own cost (collation, hand-over to the training
process); with as many workers as cores, what the cores give together. Results: a table on
stdout and JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch
from bench_train import build_disc21like, loader_rate, train_datamodule
from bench_views import views_per_s

from fisc.files import atomic_path
from fisc.malloc import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="minidisc", help="minidisc, disc21like or an image folder")
    p.add_argument("--augment", default="disc_full")
    p.add_argument("--size", type=int, default=96, help="model.train_size")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--items", type=int, default=200, help="items a round in this process")
    p.add_argument("--batches", type=int, default=12, help="batches a round in each loader")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/loader_overhead.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    a = p.parse_args()
    if a.data == "minidisc":
        data_args = []
    else:
        folder = Path(a.data) if a.data != "disc21like" else build_disc21like(
            ROOT / "data" / "disc21like", 2000, workers=max(1, a.workers))  # fmt: skip
        data_args = ["data=folder", f"data.root={folder}"]
    overrides = [f"augment={a.augment}", f"model.train_size={a.size}", *a.overrides]
    keep_freed_memory()
    dms = {w: train_datamodule([*data_args, f"num_workers={w}", "logger.media=false",
                                *overrides])[-1] for w in (0, 1, a.workers)}  # fmt: skip
    n = len(dms[0].train_set)
    rates: dict[str, list[float]] = {"in_process": [], "one_worker": [], "per_worker": []}
    main_share: list[float] = []
    for r in range(a.rounds):
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        items = [(r * a.items + i) % n for i in range(a.items)]
        rates["in_process"].append(views_per_s(dms[0].train_set, items))
        rates["one_worker"].append(loader_rate(dms[1], a.batches))
        t, u = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        rates["per_worker"].append(loader_rate(dms[a.workers], a.batches) / a.workers)
        v = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (v.ru_utime - u.ru_utime) + (v.ru_stime - u.ru_stime)
        main_share.append(cpu / (time.perf_counter() - t))
        print(f"round {r + 1}: " + ", ".join(f"{k} {x[-1]:.0f}" for k, x in rates.items())
              + f", training process {main_share[-1]:.0%} of a core", flush=True)  # fmt: skip
    summary = {k: {"median": round(statistics.median(x), 1), "min": round(min(x), 1),
                   "max": round(max(x), 1), "rounds": [round(v, 1) for v in x]}
               for k, x in rates.items()}  # fmt: skip
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "data": a.data,
        "overrides": overrides,
        "workers": a.workers,
        "views_per_s": summary,
        "training_process_core_share": [round(x, 3) for x in main_share],
        "one_worker_over_in_process_median": round(statistics.median(
            x / y for x, y in zip(rates["one_worker"], rates["in_process"], strict=True)), 3),
        "per_worker_over_in_process_median": round(statistics.median(
            x / y for x, y in zip(rates["per_worker"], rates["in_process"], strict=True)), 3),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| views/s, median (min-max) of {a.rounds} rounds | |\n|---|---:|")
    labels = {"in_process": "in this process, one core", "one_worker": "loader, 1 worker",
              "per_worker": f"loader, {a.workers} workers, per worker"}  # fmt: skip
    for k, s in summary.items():
        print(f"| {labels[k]} | {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) |")
    print(f"training process: {min(main_share):.0%}-{max(main_share):.0%} of a core")


if __name__ == "__main__":
    main()
