"""Learning curves: μAP and R@P90 against optimizer steps, per split, for fisc's default
recipe and the study's best, with the untrained backbone and pHash as flat lines.

    python experiments/curves/curves.py                       # long + isc3rd_mini, 80 epochs
    python experiments/curves/curves.py --recipes demo --epochs 20 --every 5
    python experiments/curves/curves.py --score-only          # score the checkpoints there are
    python experiments/curves/curves.py -- data.root=/my/minidisc   # Hydra overrides

Each recipe trains once per seed, ``python train.py experiment=<recipe> seed=<s>
trainer.max_epochs=<epochs> keep_every_n_epochs=<every>``, in ``outputs/curves/<recipe>/seed<s>``
(a relaunch resumes it; a finished one trains nothing). The schedule (warm-up + cosine) spans
the whole run, so the point at step t is that long run's model at t, not a shorter run's end.
Every kept checkpoint is scored once (``<checkpoint>.scores.json`` beside it): raw descriptors
and the recipe's post-processing fitted on that checkpoint's training descriptors, on every
split the data has (dev, Phase 2 rehearsal, novel edits). Results go to
``experiments/curves/results.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
import study  # noqa: E402  (splits, scoring and baselines shared with the recipes study)

from fisc.baselines.phash import phash_descriptors  # noqa: E402
from fisc.baselines.untrained import untrained_pipeline  # noqa: E402
from fisc.files import atomic_path  # noqa: E402
from fisc.inference import DescriptorPipeline  # noqa: E402
from fisc.postprocess.spec import PostProcessor  # noqa: E402
from fisc.train.config import check_config  # noqa: E402

RECIPES = ["long", "isc3rd_mini"]  # long: the demo recipe over 80 epochs
STEP = re.compile(r"step(\d+)")


def train(recipe: str, seed: int, epochs: int, every: int, extra: list[str], out: Path) -> Path:
    """Launched even when the run has finished: it then trains nothing, and a run folder
    trained with another recipe (or another fisc's defaults) is refused by train.py's resume
    check instead of being scored as this recipe's curve."""
    run_dir = out / recipe / f"seed{seed}"
    # the curve's own settings last: they win over the overrides given for every run
    args = [f"experiment={recipe}", f"seed={seed}", *extra, f"run_dir={run_dir}",
            "ckpt_path=auto", f"trainer.max_epochs={epochs}", f"keep_every_n_epochs={every}",
            f"trainer.check_val_every_n_epoch={epochs}", "logger.media=false"]  # fmt: skip
    print(f"== {recipe} seed {seed}: python train.py {' '.join(args)}", flush=True)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, check=True, env=env)
    return run_dir


def _fit_minutes(run_dir: Path) -> float | None:
    """Training minutes of the run's last launch (the whole run when it was never resumed)."""
    done = run_dir / "train_result.json"
    return json.loads(done.read_text()).get("fit_minutes") if done.is_file() else None


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the kept checkpoints, by step."""
    found = [(int(STEP.search(p.name).group(1)), p) for p in (run_dir / "checkpoints" /
             "history").glob("*.ckpt") if STEP.search(p.name)]  # fmt: skip
    return sorted(found)


def score_checkpoint(path: Path, step: int, cfg, data) -> dict:
    """Scores of one checkpoint (cached beside it)."""
    cached = path.with_suffix(".scores.json")
    _, truths, queries, references, train_images = data
    if cached.is_file():
        scores = json.loads(cached.read_text())
        if set(truths) <= set(scores):
            return scores
    pipeline = DescriptorPipeline.from_checkpoint(path)
    q, r, t = (study.describe(pipeline, s) for s in (queries, references, train_images))
    pp = PostProcessor(cfg.postprocess).fit(t) if cfg.postprocess else None
    scores = {"step": step, "postprocess": cfg.postprocess,
              **study.score(pipeline, q, r, truths, pp)}  # fmt: skip
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def baselines(cfg, data, seed: int, out: Path) -> dict:
    """The untrained backbone (with the recipe's post-processing; its random projection is
    keyed by the seed) and pHash, cached per seed for one data set, backbone and
    post-processing."""
    cached = out / f"baselines-seed{seed}.json"
    _, truths, queries, references, train_images = data
    m = check_config(cfg)["model"]
    key = {"data": str(cfg.data.root), "model": m.name, "postprocess": cfg.postprocess}
    if cached.is_file():
        saved = json.loads(cached.read_text())
        rows = saved.get("rows", {})
        if saved.get("key") == key and all(set(truths) <= set(v) for v in rows.values()):
            return rows
    pipeline = untrained_pipeline(m, seed)
    q, r, t = (study.describe(pipeline, s) for s in (queries, references, train_images))
    pp = PostProcessor(cfg.postprocess).fit(t) if cfg.postprocess else None
    rows = {
        f"untrained {m.name}": study.score(pipeline, q, r, truths, pp),
        "pHash (64-bit)": study.score(
            None, phash_descriptors(queries, progress=False),
            phash_descriptors(references, progress=False), truths,
        ),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps({"key": key, "rows": rows}, indent=2) + "\n")
    return rows


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0  # exact: equal values give 0
    return statistics.fmean(values), sd


def summary(curves: dict, base_by_seed: dict, minutes: dict) -> str:
    """Each recipe's last point over its seeds (mean ± sd, the shipped post-processed
    descriptors where the recipe has post-processing), each baseline over the same seeds, and
    the margin in units of the larger of the two seed spreads."""
    lines = []
    for recipe in dict.fromkeys(r for r, _ in curves):
        seeds = [s for r, s in curves if r == recipe and curves[(r, s)]]
        if not seeds:
            continue
        last = {s: curves[(recipe, s)][-1] for s in seeds}
        steps = sorted({row["step"] for row in last.values()})
        fit = [minutes[(recipe, s)] for s in seeds if minutes.get((recipe, s)) is not None]
        lines += [
            f"**{recipe}**, seeds {', '.join(map(str, seeds))}, step {'/'.join(map(str, steps))}"
            + (f", training {' / '.join(f'{m:.1f}' for m in fit)} min" if fit else ""),
            "",
            "| split | metric | model (mean ± sd) | baseline | baseline (mean ± sd) | margin | "
            "margin / spread |",
            "|---|---|---|---|---|---|---|",
        ]
        for split in study.SPLITS:
            if not all(split in row for row in last.values()):
                continue
            for metric, label in (("micro_ap", "μAP"), ("recall_at_p90", "R@P90")):
                model = _mean_sd([_value(row, split, metric)[0] for row in last.values()])
                names = dict.fromkeys(n for s in seeds for n in base_by_seed.get(s, {}))
                for name in names:
                    rows = [base_by_seed[s][name] for s in seeds if name in base_by_seed.get(s, {})]
                    vals = [_value(row, split, metric)[0] for row in rows if split in row]
                    if not vals:
                        continue
                    b = _mean_sd(vals)
                    margin = model[0] - b[0]
                    spread = max(model[1], b[1])
                    ratio = f"{margin / spread:.1f}" if spread > 0 else "–"
                    lines.append(
                        f"| {study.SPLIT_TITLES[split]} | {label} | {model[0]:.3f} ± "
                        f"{model[1]:.3f} | {name} | {b[0]:.3f} ± {b[1]:.3f} | {margin:+.3f} | "
                        f"{ratio} |"
                    )
        lines.append("")
    return "\n".join(lines)


def _value(scores: dict, split: str, metric: str) -> tuple[float, str]:
    kind = "post" if "post" in scores[split] else "raw"
    return scores[split][kind][metric], kind


def table(curves: dict, base: dict) -> str:
    """One row per (recipe, seed, step): μAP and R@P90 per split, raw / post-processed."""
    splits = [s for s in study.SPLITS if any(s in row for rows in curves.values() for row in rows)]
    head = ["recipe", "seed", "step"] + [
        f"{study.SPLIT_TITLES[s]} {label} {kind}"
        for s in splits
        for label in ("μAP", "R@P90")
        for kind in ("raw", "post")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(scores):
        out = []
        for s in splits:
            for metric in ("micro_ap", "recall_at_p90"):
                for kind in ("raw", "post"):
                    v = scores.get(s, {}).get(kind, {}).get(metric)
                    out.append("–" if v is None else f"{v:.3f}")
        return out

    for (recipe, seed), rows in curves.items():
        for row in rows:
            lines.append(
                "| " + " | ".join([recipe, str(seed), str(row["step"]), *cells(row)]) + " |"
            )
    for name, scores in base.items():
        lines.append("| " + " | ".join([name, "–", "–", *cells(scores)]) + " |")
    return "\n".join(lines)


def _mean_rows(rows: list[dict]) -> dict:
    """The element-wise mean of score dicts of one shape (nested dicts of floats)."""
    first = rows[0]
    if isinstance(first, dict):
        return {k: _mean_rows([r[k] for r in rows]) for k in first if all(k in r for r in rows)}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(rows) / len(rows)
    return first


def plot(curves: dict, base: dict, path: Path) -> None:
    """μAP (top) and R@P90 (bottom) against steps, one column per split; solid: after the
    recipe's post-processing, dashed: raw; a recipe with several seeds is drawn as their mean
    with a band of ± one standard deviation; flat lines: baselines (mean over the seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = [s for s in study.SPLITS if any(s in row for rows in curves.values() for row in rows)]
    recipes = list(dict.fromkeys(r for r, _ in curves))
    fig = Figure(figsize=(4.2 * len(splits), 6.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(splits), sharex=True, squeeze=False)
    metrics = [("micro_ap", "μAP"), ("recall_at_p90", "R@P90")]
    for j, split in enumerate(splits):
        for i, (metric, label) in enumerate(metrics):
            ax = axes[i][j]
            for c, recipe in enumerate(recipes):
                runs = {s: rows for (r, s), rows in curves.items() if r == recipe}
                by_step: dict[int, list[dict]] = {}
                for rows in runs.values():
                    for row in rows:
                        if split in row:
                            by_step.setdefault(row["step"], []).append(row[split])
                steps = sorted(by_step)
                name = f"{recipe} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
                for kind, style in (("raw", "--"), ("post", "o-")):
                    if not steps or kind not in by_step[steps[0]][0]:
                        continue
                    stats = [_mean_sd([p[kind][metric] for p in by_step[t]]) for t in steps]
                    mean = [m for m, _ in stats]
                    labelled = kind == "post" or "post" not in by_step[steps[0]][0]
                    width, alpha = (1.0, 0.12) if kind == "raw" else (1.5, 0.25)
                    ax.plot(steps, mean, style, color=f"C{c}", ms=3, lw=width,
                            label=name if labelled else None)  # fmt: skip
                    if len(runs) > 1:
                        low = [m - d for m, d in stats]
                        high = [m + d for m, d in stats]
                        ax.fill_between(steps, low, high, color=f"C{c}", alpha=alpha, lw=0)
            for k, (bname, scores) in enumerate(base.items()):
                if split in scores:
                    value, _ = _value(scores, split, metric)
                    ax.axhline(value, color=f"C{len(recipes) + k}", ls=":", lw=1.2, label=bname)
            ax.set_title(f"{study.SPLIT_TITLES[split]}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("optimizer steps")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("learning curves (solid: post-processed, dashed: raw, band: ± 1 sd over seeds; "
                 "dotted: baselines)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument(
        "--epochs", type=int, default=80, help="80 x 15 = 1,200 steps: 3x the 390-step demo"
    )
    p.add_argument("--every", type=int, default=5, help="keep and score a checkpoint every N")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "curves")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "curves")
    p.add_argument("--score-only", action="store_true", help="no training: score what is there")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    a = p.parse_args()
    curves: dict = {}
    base: dict = {}
    base_by_seed: dict = {}
    minutes: dict = {}
    for recipe in a.recipes:
        cfg = study._compose(recipe, a.overrides)
        data = study._data(cfg)
        for seed in a.seeds:
            run_dir = a.out / recipe / f"seed{seed}"
            if not a.score_only:
                train(recipe, seed, a.epochs, a.every, a.overrides, a.out)
            rows = []
            for step, path in checkpoints(run_dir):
                print(f"   score {recipe} seed {seed} step {step}", flush=True)
                rows.append(score_checkpoint(path, step, cfg, data))
            curves[(recipe, seed)] = rows
            minutes[(recipe, seed)] = _fit_minutes(run_dir)
            base_by_seed.setdefault(seed, baselines(cfg, data, seed, a.out))
        base = base or base_by_seed[a.seeds[0]]
    a.results.mkdir(parents=True, exist_ok=True)
    payload = {"curves": [{"recipe": r, "seed": s, "points": rows, "fit_minutes": minutes[(r, s)]}
                          for (r, s), rows in curves.items()], "baselines": base,
               "baselines_by_seed": {str(s): v for s, v in base_by_seed.items()}}  # fmt: skip
    with atomic_path(a.results / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    md = table(curves, base)
    with atomic_path(a.results / "results.md") as tmp:
        tmp.write_text(md + "\n")
    mean_base = {name: _mean_rows([rows[name] for rows in base_by_seed.values() if name in rows])
                 for name in base}  # fmt: skip
    plot(curves, mean_base, a.results / "curves.png")
    text = summary(curves, base_by_seed, minutes)
    with atomic_path(a.results / "summary.md") as tmp:
        tmp.write_text(text + "\n")
    print(md)
    print(text)


if __name__ == "__main__":
    main()
