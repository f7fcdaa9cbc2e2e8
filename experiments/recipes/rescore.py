"""Rescore cached study runs with today's code and compare with their cached scores: a check
that a change of fisc (a refactor) left what the study measures unchanged.

    python experiments/recipes/rescore.py                          # seed 0 of every recipe
    python experiments/recipes/rescore.py --recipes demo --seeds 0 1 2

Each run ``outputs/study/<recipe>/seed<s>`` is hard-linked into a scratch folder (so nothing
of the cached run is touched), its ``scores.json`` dropped there, and scored again by the
study's own ``_score_run`` (same splits, same post-processor); every μAP and R@P90 must equal
the cached figure exactly. Exit status 1 if one differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
import study  # noqa: E402


def figures(scores: dict) -> dict[str, float]:
    """``split/system/metric -> value`` of a scores.json (the training time left out)."""
    return {f"{split}/{system}/{metric}": value
            for split, systems in scores.items() if isinstance(systems, dict)
            for system, metrics in systems.items() if isinstance(metrics, dict)
            for metric, value in metrics.items()}  # fmt: skip


def rescore(recipe: str, seed: int, out: Path, scratch: Path) -> list[str]:
    """The differences between a cached run's scores and a fresh scoring of it."""
    run_dir = out / recipe / f"seed{seed}"
    cached = json.loads((run_dir / "scores.json").read_text())
    copy = scratch / recipe / f"seed{seed}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(run_dir), str(copy)], check=True)
    (copy / "scores.json").unlink()
    # train_result.json names the cached run's checkpoint and fitted post-processor: both are
    # only read (a refit, which happens only if the recipe's spec changed, would write there)
    fresh = study._score_run(recipe, seed, [], copy, cached.get("train_minutes"))
    before, after = figures(cached), figures(fresh)
    return [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(before.keys() | after.keys())
            if before.get(k) != after.get(k)]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="+", default=study.RECIPES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "study")
    a = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fisc-rescore-"))
    failed = False
    try:
        for recipe in a.recipes:
            for seed in a.seeds:
                diff = rescore(recipe, seed, a.out, scratch)
                failed |= bool(diff)
                print(f"{recipe} seed {seed}: " + ("identical" if not diff else "DIFFERS"),
                      flush=True)  # fmt: skip
                for line in diff:
                    print(f"  {line}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
