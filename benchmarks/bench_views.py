"""Per-view CPU cost of the training data path, variants interleaved: what one DataLoader
worker does for one view (decode at the configured draft scale, the pipeline's CPU edits,
tensor conversion), on one core, in this process.

    python benchmarks/bench_views.py                       # DISC21-like folder, 224 px
    python benchmarks/bench_views.py --augment disc_full --variant fast=augment.work_side=1

Each round times every variant on the same ``--items`` images (the same views: the per-sample
randomness is keyed), one variant after the other, and ``--rounds`` rounds alternate them, so a
machine whose pace drifts over minutes slows every variant alike; the figure is each variant's
median views/s over the rounds, its spread (min-max), and the median over rounds of its ratio
to the first variant. ``make bench-train`` measures the whole loader and training loop; this
measures the part the working resolution and the decode scale change, side by side.

``--per-op`` adds one pass per variant with every CPU op timed where the pipeline runs it
(:func:`timed_ops`): each op's µs and share of a view, and how much faster a view could get if
ops cost nothing (the README's "Per op, on minidisc"):

    python benchmarks/bench_views.py --folder data/minidisc/images/training --size 96 \\
        --augment disc_full --warm 3000 --per-op
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import platform
import pstats
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from ab_trees import rate_summary
from bench_train import parse_variants, train_datamodule

from fisc.data.datasets import TwoViewDataset
from fisc.files import atomic_path
from fisc.malloc import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = [
    "work_side1=augment.work_side=1",
    "work_side1_draft=augment.work_side=1,data.decode_min_side=224",
]


def dataset(folder: Path, augment: str, overrides: list[str], size: int) -> TwoViewDataset:
    """The training set as ``train.py`` builds it (decode scale, pipelines), no workers."""
    *_, dm = train_datamodule([f"augment={augment}", f"model.train_size={size}", "data=folder",
                               f"data.root={folder}", "num_workers=0", *overrides])  # fmt: skip
    return dm.train_set


def views_per_s(ds: TwoViewDataset, items: list[int]) -> float:
    start = time.perf_counter()
    for i in items:
        ds[i]  # decode + two views + tensors
    return 2 * len(items) / (time.perf_counter() - start)


# where a view's CPU time goes: profiler entries (file or function name substrings) -> stage
STAGES = {
    "JPEG/PNG decode and file read": (
        "ImagingDecoder",
        "imdecode",
        "BufferedReader",
        "_io.open",
        "PIL/Image.py",
        "PIL/JpegImagePlugin.py",
        "ImageFile.py",
    ),
    "resize": ("<resize>",),
    "text and emoji rendering": ("Font", "getfont", "ImageDraw", "overlay"),
    "to tensor": ("torch.", "TensorBase"),
}


def stage_shares(ds: TwoViewDataset, items: list[int]) -> dict[str, float]:
    """One profiled pass: each stage's share of the pass's own (exclusive) CPU time."""
    prof = cProfile.Profile()
    prof.enable()
    views_per_s(ds, items)
    prof.disable()
    totals: dict[str, float] = dict.fromkeys([*STAGES, "edits and the rest"], 0.0)
    for (path, _line, name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(prof).stats.items():
        where = f"{path}:{name}"
        stage = next((s for s, keys in STAGES.items() if any(k in where for k in keys)),
                     "edits and the rest")  # fmt: skip
        totals[stage] += tottime
    whole = sum(totals.values()) or 1.0
    return {s: round(t / whole, 3) for s, t in totals.items()}


PASTED = "(decode of pasted images)"


@contextlib.contextmanager
def timed_ops():
    """While inside, every CPU op's ``edit`` is timed: yields op name -> ``[seconds, calls]``.
    The other image that ``paste_onto`` and ``overlay_image`` draw (a decode) is timed apart,
    under :data:`PASTED` (its calls: the images drawn), and left out of the op's own time.
    Not reentrant: one such context at a time."""
    from fisc.augment.ops import base

    spent: dict[str, list[float]] = {}
    edit = base.Op.edit

    def timed(self, img, rng, other=None):
        drawn = [0.0, 0]  # seconds, images
        provider = other
        if other is not None:  # called only by the ops that need another image

            def provider(r):
                t = time.perf_counter()
                try:
                    return other(r)
                finally:
                    drawn[0] += time.perf_counter() - t
                    drawn[1] += 1

        t = time.perf_counter()
        try:
            return edit(self, img, rng, provider)
        finally:
            own = spent.setdefault(self.name, [0.0, 0])
            own[0] += time.perf_counter() - t - drawn[0]
            own[1] += 1
            if drawn[1]:
                pasted = spent.setdefault(PASTED, [0.0, 0])
                pasted[0] += drawn[0]
                pasted[1] += drawn[1]

    base.Op.edit = timed
    try:
        yield spent
    finally:
        base.Op.edit = edit


def op_shares(ds: TwoViewDataset, items: list[int]) -> dict:
    """One pass with every op timed: the pass's µs per view, and per op (and the pasted images'
    decode) its µs per view, its share of the pass, its calls per view and whether it has a GPU
    form in fisc's registry; ops by share, largest first."""
    import fisc.augment.gpu  # noqa: F401  (registers the GPU implementations)
    from fisc.augment.registry import REGISTRY

    gpu_able = set(REGISTRY.view("gpu"))
    with timed_ops() as spent:
        rate = views_per_s(ds, items)
    n = 2 * len(items)
    whole = n / rate
    ops = {
        name: {
            "us_per_view": round(secs / n * 1e6, 1),
            "share": round(secs / whole, 4),
            "calls_per_view": round(calls / n, 3),
            "gpu_form": name in gpu_able,
        }
        for name, (secs, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0])
    }
    return {"us_per_view": round(whole / n * 1e6, 1), "ops": ops}


def ceiling(shares: list[float]) -> float:
    """How many times faster a view could get if the parts with these shares of its time cost
    nothing: ``1 / (1 - sum)``."""
    rest = 1.0 - sum(shares)
    return math.inf if rest <= 0 else 1.0 / rest


def print_op_table(label: str, augment: str, result: dict) -> None:
    """The per-op table of one variant, with the running ceiling (the ops so far, free)."""
    print(f"\n{augment}, {label}: {result['us_per_view']:.0f} µs a view on one core")
    print("| op | µs a view | share | calls a view | GPU form | these ops free: view at most |")
    print("|---|---:|---:|---:|---|---:|")
    so_far: list[float] = []
    for name, r in result["ops"].items():
        so_far.append(r["share"])
        gpu = "yes" if r["gpu_form"] else ""
        print(f"| {name} | {r['us_per_view']:.0f} | {r['share']:.1%} | "
              f"{r['calls_per_view']:.2f} | {gpu} | {ceiling(so_far):.2f}x |")  # fmt: skip
    ops = {name: r for name, r in result["ops"].items() if name != PASTED}
    ops_share = sum(r["share"] for r in ops.values())
    pasted = result["ops"].get(PASTED, {"share": 0.0})["share"]
    gpu_share = sum(r["share"] for r in ops.values() if r["gpu_form"])
    print(f"the {len(ops)} ops: {ops_share:.1%} of a view ({ceiling([ops_share]):.2f}x if free); "
          f"the pasted images' decode {pasted:.1%}; the rest {1 - ops_share - pasted:.1%} (the "
          f"view's own decode, resizes, tensors, draws); ops with a GPU form: {gpu_share:.1%}, "
          f"at most {ceiling([gpu_share]):.2f}x if all ran on the GPU")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", type=Path, default=ROOT / "data" / "disc21like")
    p.add_argument("--augment", nargs="+", default=["basic", "disc_full"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--items", type=int, default=60)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warm", type=int, default=5,
                   help="items made per variant before the timing (the first N images): "
                   "fills the font, emoji and glyph caches a training run's workers have "
                   "filled")  # fmt: skip
    p.add_argument("--variant", action="append", default=None, metavar="LABEL=OVERRIDES",
                   help="comma-separated Hydra overrides; default: work_side=1, and with the "
                   "JPEG decode scale lowered to the view size too")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "views_cpu.json")
    p.add_argument("--profile", action="store_true",
                   help="also profile one pass per variant: each stage's share of its CPU time "
                   "(decode, resize, text rendering, tensors, edits)")  # fmt: skip
    p.add_argument("--per-op", action="store_true",
                   help="also time every op in one pass per variant: its µs and share of a "
                   "view, whether it has a GPU form, and how much faster a view could get if "
                   "the largest ops cost nothing")  # fmt: skip
    a = p.parse_args()
    if not a.folder.is_dir():
        sys.exit(f"{a.folder} is missing: `make bench-train` writes the DISC21-like folder once")
    keep_freed_memory()
    cv2.setNumThreads(1)  # as in a DataLoader worker
    torch.set_num_threads(1)
    try:
        variants = parse_variants(a.variant or DEFAULT_VARIANTS)
    except ValueError as e:
        p.error(str(e))
    rng = np.random.default_rng(0)
    rows = []
    for augment in a.augment:
        sets = {label: dataset(a.folder, augment, o, a.size) for label, o in variants}
        n_images = len(next(iter(sets.values())))
        items = rng.choice(n_images, a.items, replace=False).tolist()
        warm = [i % n_images for i in range(a.warm)]
        for ds in sets.values():
            views_per_s(ds, warm)  # warm caches, fonts, glyphs, lazy imports
        rates: dict[str, list[float]] = {label: [] for label in sets}
        for _ in range(a.rounds):
            for label, ds in sets.items():
                rates[label].append(views_per_s(ds, items))
        for label, r in rates.items():
            median, span, ratio = rate_summary(r, rates["default"])
            row = {
                "augment": augment,
                "variant": label,
                "overrides": dict(variants)[label],
                "views_per_s_median": median,
                "views_per_s_min_max": span,
                "ratio_to_default_median": ratio,
            }
            if a.profile:
                row["cpu_share"] = stage_shares(sets[label], items)
            if a.per_op:
                row["per_op"] = op_shares(sets[label], items)
            rows.append(row)
            print(json.dumps(row), flush=True)
    info = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg": os.getloadavg(), "folder": str(a.folder), "size": a.size,
            "items": a.items, "rounds": a.rounds, "warm": a.warm,
            "argv": sys.argv[1:]}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    print("| augment | variant | views/s on one core (median, min-max) | x default (median) |")
    print("|---|---|---:|---:|")
    for r in rows:
        lo, hi = r["views_per_s_min_max"]
        rate = f"{r['views_per_s_median']:.0f} ({lo:.0f}-{hi:.0f})"
        print(f"| {r['augment']} | {r['variant']} | {rate} | {r['ratio_to_default_median']:.2f} |")
    for r in rows:
        if "per_op" in r:
            print_op_table(r["variant"], r["augment"], r["per_op"])


if __name__ == "__main__":
    main()
