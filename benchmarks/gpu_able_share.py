"""How much of a pipeline's CPU edit time the ops with a GPU form account for.

``python benchmarks/gpu_able_share.py [--augment disc_full ...]`` weighs each op of every CPU
stage by how often the stage runs it (``select: all``: its ``p``; a chain of ``[a, b]`` ops
drawn with weights ``p``: its weight's share of the chain's total, times the chain's mean
length) and by its cost on one core (the inverse of its images/s in ``make bench-augment``'s
``benchmarks/results/augment_cpu.json``, 224 px), and prints the share of the expected edit
time spent in ops that also have a GPU implementation in fisc's op registry: the most the CPU
edits could shrink if every such op moved to the GPU stage. Decoding, resizing to the view and
tensor conversion are not edits and are not counted here (``bench_views.py --profile`` splits
those out). The chain weighting is the first-order one (no without-replacement correction).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def expected_costs(stages: list[dict], rates: dict[str, float]) -> dict[str, float]:
    """Op -> expected seconds per view in ``stages`` (ops without a measured rate are left
    out and reported by the caller)."""
    cost: dict[str, float] = {}
    for stage in stages:
        ops = {name: (cfg or {}).get("p", 1.0) for name, cfg in (stage.get("ops") or {}).items()}
        select = stage.get("select", "all")
        if select == "all":
            runs = dict(ops)
        else:
            lo, hi = (int(v) for v in select)
            mean_len = (min(lo, len(ops)) + min(hi, len(ops))) / 2
            total = sum(ops.values())
            runs = {name: mean_len * p / total for name, p in ops.items()}
        for name, n in runs.items():
            if name in rates:
                cost[name] = cost.get(name, 0.0) + n / rates[name]
    return cost


def main() -> None:
    import fisc.augment.gpu  # noqa: F401  (registers the GPU implementations)
    from fisc.augment.registry import REGISTRY

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--augment", nargs="+", default=["basic", "disc_full", "disc_asym"])
    p.add_argument("--rates", type=Path, default=ROOT / "benchmarks/results/augment_cpu.json")
    args = p.parse_args()
    rates = json.loads(args.rates.read_text())["ops"]
    gpu_able = set(REGISTRY.view("gpu"))
    for name in args.augment:
        cfg = yaml.safe_load((ROOT / "conf/augment" / f"{name}.yaml").read_text())
        cost: dict[str, float] = {}
        for view in cfg["views"]:
            for op, c in expected_costs(view.get("stages") or [], rates).items():
                cost[op] = cost.get(op, 0.0) + c / len(cfg["views"])
        total = sum(cost.values())
        moved = sorted(op for op in cost if op in gpu_able)
        share = sum(cost[op] for op in moved) / total if total else 0.0
        print(
            f"{name}: {total * 1e3:.2f} ms of CPU edits per view at 224 px; ops with a GPU "
            f"form ({', '.join(moved) or 'none'}): {share:.0%} of it"
        )


if __name__ == "__main__":
    main()
