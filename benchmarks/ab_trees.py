"""Per-view CPU cost of the training data path in other checkouts of fisc, side by side: what
one DataLoader worker does for one view (decode, the pipeline's CPU edits, tensor
conversion), on one core, for each ``LABEL=TREE[:WORK_SIDE[:DECODE_MIN_SIDE]]``, with the
process settings ``train.py`` of that tree makes (glibc keeping freed memory, where it has
``fisc.malloc``).

    git worktree add /tmp/fisc-old <commit>
    python benchmarks/ab_trees.py --tree old=/tmp/fisc-old::448 --tree new=.::448 \\
        --tree new_fast=.:1:224

Each measurement runs in a fresh interpreter importing that tree's ``fisc`` (``PYTHONPATH``),
building the views from that tree's ``conf/augment/<augment>.yaml`` through the APIs every
version has (``AugmentConfig``, ``TwoViewDataset``), with ``augment.work_side`` and the JPEG
decode scale (``data.decode_min_side``; what ``train.py`` passes, 2 x the training size by
default) given where that tree has them. Rounds alternate the trees (rotating which goes
first), so a machine whose pace drifts over minutes slows each alike; the figure is each
tree's median views/s over the rounds, its spread (min-max), and the median over rounds of
its ratio to the first tree. ``make bench-train`` measures the loader and training loop of
this checkout; this compares code versions, which that cannot do in one run.

``--augment op:NAME`` times one edit op alone instead (calls/s at ``p=1`` on the folder's
images scaled to ``--size``), for a change confined to an op:

    python benchmarks/ab_trees.py --tree old=/tmp/fisc-old --tree new=. --size 96 \\
        --folder data/minidisc/images/training --augment op:meme op:screenshot --warm 3000
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(a: argparse.Namespace) -> None:
    """In the tree's own interpreter: views/s over ``a.items`` images, after a warm-up."""
    import cv2
    import torch
    from omegaconf import OmegaConf

    from fisc.augment.pipeline import AugmentConfig
    from fisc.data.datasets import TwoViewDataset
    from fisc.data.disc21 import list_images

    try:  # as train.py does, where the tree has it (fisc/malloc.py)
        from fisc.malloc import keep_freed_memory

        kept = keep_freed_memory()
    except ImportError:
        kept = False
    cv2.setNumThreads(1)  # one core, as in a loader worker
    torch.set_num_threads(1)
    augment = a.augment[0]  # the parent passes one
    if augment.startswith("op:"):
        return child_op(a, augment[3:], list_images(a.folder, recursive=True).paths, kept)
    cfg = OmegaConf.to_container(OmegaConf.load(Path("conf/augment") / f"{augment}.yaml"))
    if a.work_side is not None:
        cfg["work_side"] = a.work_side
    views = AugmentConfig(**cfg).build(a.size)
    kwargs = {}
    if a.min_side is not None and "min_side" in inspect.signature(TwoViewDataset).parameters:
        kwargs["min_side"] = a.min_side
    ds = TwoViewDataset(list_images(a.folder, recursive=True), views, seed=0, **kwargs)
    n = len(ds)
    for i in range(a.warm):  # epoch 0 warms the per-process caches (fonts, emoji, glyphs)
        ds[(0, i % n)]
    start = time.perf_counter()
    for i in range(a.items):  # epoch 1: views the warm-up did not make
        ds[(1, i % n)]
    rate = 2 * a.items / (time.perf_counter() - start)
    applied = {
        "work_side": getattr(views[0], "work_side", None),  # what this tree honoured
        "min_side": getattr(ds, "min_side", None),
        "keep_freed_memory": kept,
    }
    print(json.dumps({"views_per_s": rate, "applied": applied}))


def child_op(a: argparse.Namespace, name: str, paths: list, kept: bool) -> None:
    """One edit op alone (``--augment op:NAME``, at ``p=1``): calls/s over ``a.items`` calls
    after ``a.warm`` calls, on up to 100 of the folder's images scaled to a shorter side of
    ``a.size`` (OpenCV, so that every version reads them alike), each call keyed by its
    number."""
    import cv2
    import numpy as np

    from fisc.augment.ops import build_op

    images = []
    for path in paths[:100]:
        img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        f = a.size / min(img.shape[:2])
        size = (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f)))
        images.append(np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA)))
    op = build_op(name, {"p": 1.0})

    def other(rng):
        return images[int(rng.integers(len(images)))]

    for k in range(a.warm):
        op.edit(images[k % len(images)], np.random.default_rng([0, k]), other)
    start = time.perf_counter()
    for k in range(a.items):
        op.edit(images[k % len(images)], np.random.default_rng([1, k]), other)
    rate = a.items / (time.perf_counter() - start)
    print(json.dumps({"views_per_s": rate, "applied": {"op": name, "keep_freed_memory": kept}}))


def rate_summary(rates: list[float], ref: list[float]) -> tuple[float, list[float], float]:
    """Median views/s over rounds, its range (min, max) and the median of each round's ratio to
    ``ref`` (the reference's rates, round by round), rounded for the results files."""
    median = round(statistics.median(rates), 1)
    ratio = round(statistics.median(x / y for x, y in zip(rates, ref, strict=True)), 3)
    return median, [round(min(rates), 1), round(max(rates), 1)], ratio


def parse_tree(spec: str) -> dict:
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--tree {spec!r}: expected LABEL=TREE[:WORK_SIDE[:DECODE_MIN_SIDE]]")
    parts = rest.split(":")
    if len(parts) > 3:
        raise SystemExit(f"--tree {spec!r}: at most TREE:WORK_SIDE:DECODE_MIN_SIDE")
    tree, work_side, min_side = (parts + ["", ""])[:3]
    path = Path(tree).resolve()
    if not (path / "fisc" / "__init__.py").is_file():
        raise SystemExit(f"--tree {spec!r}: {path} is not a fisc checkout (no fisc/__init__.py)")
    return {
        "label": label,
        "tree": str(path),
        "work_side": float(work_side) if work_side else None,
        "min_side": int(min_side) if min_side else None,
    }


def measure(t: dict, a: argparse.Namespace, augment: str) -> dict:
    """``{"views_per_s", "applied"}`` of one child run of tree ``t``."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--folder",
        str(a.folder),
        "--augment",
        augment,
        "--size",
        str(a.size),
        "--items",
        str(a.items),
        "--warm",
        str(a.warm),
    ]
    if t["work_side"] is not None:
        cmd += ["--work-side", str(t["work_side"])]
    if t["min_side"] is not None:
        cmd += ["--min-side", str(t["min_side"])]
    env = {**os.environ, "PYTHONPATH": t["tree"], "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=t["tree"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{t['label']} ({t['tree']}), {augment}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--tree",
        action="append",
        default=None,
        metavar="LABEL=TREE[:WS[:MS]]",
        help="a checkout to measure, with augment.work_side and data.decode_min_side "
        "(empty: that tree's default; repeatable, the first is the reference)",
    )
    p.add_argument("--folder", type=Path, default=ROOT / "data" / "disc21like")
    p.add_argument(
        "--augment",
        nargs="+",
        default=["basic", "disc_full"],
        help="pipelines (conf/augment), or op:NAME for one edit op alone (calls/s, not views/s)",
    )
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--items", type=int, default=80)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--warm",
        type=int,
        default=5,
        help="items each child works through (epoch 0) before the timed ones (epoch 1): a "
        "worker's caches (fonts, emoji) fill over its first thousands of items; a training run's "
        "persistent workers run warm (default 5: as before, mostly cold)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON results (default: none)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work-side", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--min-side", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.folder = a.folder.resolve()
    if a.child:
        return child(a)
    if not a.tree or len(a.tree) < 2:
        raise SystemExit("give at least two --tree LABEL=TREE[:WORK_SIDE[:DECODE_MIN_SIDE]]")
    if not a.folder.is_dir():
        raise SystemExit(f"{a.folder} does not exist (make bench-train writes data/disc21like)")
    trees = [parse_tree(s) for s in a.tree]
    rows = []
    for augment in a.augment:
        rates: dict[str, list[float]] = {t["label"]: [] for t in trees}
        applied: dict[str, dict] = {}
        for r in range(a.rounds):
            order = trees[r % len(trees) :] + trees[: r % len(trees)]
            for t in order:
                got = measure(t, a, augment)
                rates[t["label"]].append(got["views_per_s"])
                applied[t["label"]] = got["applied"]
            print(
                f"{augment} round {r + 1}/{a.rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()),
                flush=True,
            )
        for t in trees:
            median, span, ratio = rate_summary(rates[t["label"]], rates[trees[0]["label"]])
            rows.append(
                {
                    **t,
                    "applied": applied[t["label"]],
                    "augment": augment,
                    "views_per_s_median": median,
                    "views_per_s_min_max": span,
                    "ratio_to_first_median": ratio,
                    "views_per_s_rounds": [round(x, 1) for x in rates[t["label"]]],
                }
            )
    print(
        "| augment | tree | work_side | decode_min_side | views/s on one core, median (min-max) "
        "| x first (median) |\n|---|---|---:|---:|---:|---:|"
    )
    for r in rows:
        lo, hi = r["views_per_s_min_max"]
        print(
            f"| {r['augment']} | {r['label']} | {r['work_side'] or '-'} | {r['min_side'] or '-'} "
            f"| {r['views_per_s_median']:.0f} ({lo:.0f}-{hi:.0f}) "
            f"| {r['ratio_to_first_median']:.2f} |"
        )
    if a.out is not None:
        info = {
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "load_avg": list(os.getloadavg()),
            "folder": str(a.folder),
            "size": a.size,
            "items": a.items,
            "rounds": a.rounds,
            "warm": a.warm,
            "command": " ".join(sys.argv),
        }
        from fisc.files import atomic_path  # this checkout's (a child imports its tree's fisc)

        with atomic_path(a.out) as tmp:
            tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
