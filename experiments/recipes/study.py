"""The recipes study: every ``*_mini`` recipe and the off-the-shelf baselines on minidisc, the
same budget, several seeds; μAP and R@P90 on the dev and Phase 2 rehearsal splits, before and
after each recipe's post-processing (fitted on training descriptors only).

    python experiments/recipes/study.py      # 4 *_mini recipes + demo, seeds 0 1 2, baselines
    python experiments/recipes/study.py --seeds 0 --recipes sscd_mini
    python experiments/recipes/study.py --seeds 0 -- data.root=/my/minidisc   # Hydra overrides

Each training run is ``python train.py experiment=<recipe> seed=<s>`` in
``outputs/study/<recipe>/seed<s>`` and resumes or is skipped if it finished; scores are cached
per run in ``scores.json``. The table goes to ``experiments/recipes/results.{json,md}``, a plot
to ``results.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from fisc.baselines.phash import phash_descriptors
from fisc.baselines.untrained import untrained_pipeline
from fisc.challenge import MAX_DIMS, load_ground_truth
from fisc.data.disc21 import Disc21
from fisc.descriptors import Descriptors
from fisc.evaluation import evaluate
from fisc.files import atomic_path
from fisc.inference import (
    DescriptorPipeline,
    fit_run_postprocessor,
    load_fitted_postprocessor,
    subset,
)
from fisc.postprocess.spec import PostProcessor
from fisc.train.config import check_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["sscd_mini", "isc1st_mini", "isc2nd_mini", "isc3rd_mini", "demo"]  # demo: fisc default
SPLITS = {
    "dev": "dev_ground_truth.csv",
    "phase2": "phase2_ground_truth.csv",
    "novel": "novel_ground_truth.csv",  # minidisc's novel-edits split, where the data has it
}
SPLIT_TITLES = {"dev": "dev", "phase2": "Phase 2", "novel": "novel edits"}
# for the untrained backbone: the default recipe's, and the best recipe's (is it the stretching?)
BASELINE_POSTPROCESS = ["pca_whiten128,l2", "pca255,l2,stretch5:2.5"]


def _compose(recipe: str, extra: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={recipe}", *extra])


def score(pipeline: DescriptorPipeline | None, queries, references, truths, pp=None) -> dict:
    """``{split: {raw: {...}, post: {...}}}`` of μAP and R@P90: raw descriptors, and with
    ``pp`` (a fitted post-processor) the pipeline's final descriptors of each role."""
    systems = {"raw": (queries, references, MAX_DIMS)}
    if pp is not None:
        post = pipeline.with_postprocessor(pp)
        q, r = post.finalize(queries, "query"), post.finalize(references, "reference")
        systems["post"] = (q, r, post.max_dims)
    out = {}
    for split, gt in truths.items():
        out[split] = {}
        for kind, (q, r, dims) in systems.items():
            res = evaluate(subset(q, gt), r, gt, max_dims=dims)
            out[split][kind] = {"micro_ap": res.micro_ap, "recall_at_p90": res.recall_at_p90}
    return out


def describe(pipeline: DescriptorPipeline, images, device: str = "cpu") -> Descriptors:
    """The pipeline's raw (model) descriptors of ``images``."""
    return pipeline.raw(images, batch_size=64, num_workers=2, device=device)[0]


def run(recipe: str, seed: int, extra: list[str], out_root: Path) -> dict:
    run_dir = out_root / recipe / f"seed{seed}"
    cached = run_dir / "scores.json"
    splits = _splits(_compose(recipe, [f"seed={seed}", *extra]))
    if cached.is_file():
        scores = json.loads(cached.read_text())
        if set(splits) <= set(scores):
            return scores
    if (run_dir / "train_result.json").is_file():  # trained: score the splits it lacks only
        print(f"== {recipe} seed {seed}: trained, scoring {' '.join(splits)}", flush=True)
        return _score_run(recipe, seed, extra, run_dir, None)
    args = [
        f"experiment={recipe}",
        f"seed={seed}",
        f"run_dir={run_dir}",
        "ckpt_path=auto",
        "logger.media=false",
        *extra,
    ]
    minutes = launch(args, f"{recipe} seed {seed}")
    return _score_run(recipe, seed, extra, run_dir, minutes)


def launch(args: list[str], label: str) -> float:
    """``python train.py ARGS`` from the repository root (W&B off); its wall-clock minutes."""
    print(f"== {label}: python train.py {' '.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        check=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    return (time.perf_counter() - started) / 60


def _score_run(
    recipe: str, seed: int, extra: list[str], run_dir: Path, minutes, device: str = "cpu"
) -> dict:
    """Score a finished run on every split (its own post-processor for ``post``) and cache it;
    ``minutes`` None keeps the training time an earlier scoring recorded. ``device`` runs the
    model (the GPU quality run scores on its GPU)."""
    cached = run_dir / "scores.json"
    if minutes is None and cached.is_file():
        minutes = json.loads(cached.read_text()).get("train_minutes")
    cfg = _compose(recipe, [f"seed={seed}", *extra])
    result = json.loads((run_dir / "train_result.json").read_text())
    if minutes is None:  # trained elsewhere (e.g. by `make demo`): its own fit time
        minutes = result.get("fit_minutes")
    data, truths, queries, references, train = _data(cfg)
    last = result["last_checkpoint"]
    pp = None
    if cfg.postprocess:  # the run's own post-processor, fitted at the end of training
        fitted = (result.get("postprocess") or {}).get("file")
        pp = load_fitted_postprocessor(fitted, last) if fitted else None
        if pp is None or pp.spec != cfg.postprocess:  # older fisc, or another spec: fit now
            pp = fit_run_postprocessor(last, train, cfg.postprocess)[1]
    pipeline = DescriptorPipeline.from_checkpoint(last)
    q, r = describe(pipeline, queries, device), describe(pipeline, references, device)
    scores = {
        "recipe": recipe,
        "seed": seed,
        "train_minutes": round(minutes, 2) if minutes is not None else None,
        "postprocess": cfg.postprocess,
        **score(pipeline, q, r, truths, pp),
    }
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def _splits(cfg) -> dict[str, Path]:
    """The study's splits the data has (older minidisc builds lack the novel-edits split)."""
    root = Path(cfg.data.root)
    return {s: root / f for s, f in SPLITS.items() if (root / f).is_file() or s != "novel"}


def _data(cfg):
    root = Path(cfg.data.root)
    data = Disc21(root)
    truths = {s: load_ground_truth(path) for s, path in _splits(cfg).items()}
    queries = data.queries({q: r for gt in truths.values() for q, r in gt.items()})
    return data, truths, queries, data.images("reference"), data.images("training")


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in spec)


def baselines(seeds: list[int], extra: list[str], out_root: Path, specs: list[str]) -> list[dict]:
    """The untrained backbone (ImageNet weights, random projection), one row per seed and
    post-processing spec, and pHash."""
    rows = []
    cfg = _compose("sscd_mini", extra)
    _, truths, queries, references, train = _data(cfg)
    m = check_config(cfg)["model"]
    for spec in specs:
        PostProcessor(spec)._check_dims(m.dims)  # a bad spec fails before any extraction
    for seed in seeds:
        # the first spec keeps the cache name of earlier studies
        cached = {
            spec: out_root
            / "untrained"
            / (f"seed{seed}.json" if i == 0 else f"seed{seed}-{_slug(spec)}.json")
            for i, spec in enumerate(specs)
        }
        missing = [
            spec
            for spec, path in cached.items()
            if not path.is_file() or not set(truths) <= set(json.loads(path.read_text()))
        ]
        if missing:
            pipeline = untrained_pipeline(m, seed)
            q, r, t = (describe(pipeline, s) for s in (queries, references, train))
            for spec in missing:
                row = {
                    "recipe": f"untrained {m.name}",
                    "seed": seed,
                    "postprocess": spec,
                    **score(pipeline, q, r, truths, PostProcessor(spec).fit(t)),
                }
                cached[spec].parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached[spec]) as tmp:
                    tmp.write_text(json.dumps(row, indent=2) + "\n")
        rows += [json.loads(cached[spec].read_text()) for spec in specs]
    rows.sort(key=lambda r: specs.index(r["postprocess"]))  # stable: seeds stay in order
    q, r = phash_descriptors(queries, progress=False), phash_descriptors(references, progress=False)
    rows.append(
        {
            "recipe": "pHash (64-bit)",
            "seed": None,
            "postprocess": None,
            **score(None, q, r, truths),
        }
    )
    return rows


def _systems(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped per system: a recipe, or a baseline with one post-processing spec."""
    by: dict[tuple, list[dict]] = {}
    for row in rows:
        by.setdefault((row["recipe"], row["postprocess"]), []).append(row)
    names = [recipe for recipe, _ in by]
    return {
        (recipe if names.count(recipe) == 1 else f"{recipe} + {spec}"): runs
        for (recipe, spec), runs in by.items()
    }


def table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds, per recipe, split, metric and stage."""
    by = _systems(rows)

    def cell(runs, split, kind, metric):
        vals = [r[split][kind][metric] for r in runs if kind in r.get(split, {})]
        if not vals:
            return "–"
        if len(vals) == 1:
            return f"{vals[0]:.3f}"
        return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"

    splits = [s for s in SPLITS if any(s in r for r in rows)]
    metrics = [("micro_ap", "μAP"), ("recall_at_p90", "R@P90")]
    columns = [
        (s, kind, m, f"{SPLIT_TITLES[s]} {label}{' post' if kind == 'post' else ''}")
        for s in splits
        for m, label in metrics
        for kind in ("raw", "post")
    ]
    head = "| system | post-processing | seeds | " + " | ".join(c[3] for c in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for name, runs in by.items():
        seeds = ",".join(str(r["seed"]) for r in runs if r["seed"] is not None) or "–"
        cells = " | ".join(cell(runs, s, kind, m) for s, kind, m, _ in columns)
        lines.append(f"| {name} | `{runs[0]['postprocess'] or 'none'}` | {seeds} | {cells} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """μAP per system on the dev and Phase 2 splits: a dot per seed, before (hollow) and after
    (filled) post-processing, the bar at the post-processed mean (raw where there is none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    systems = _systems(rows)
    names = list(systems)
    splits = [s for s in SPLITS if any(s in r for r in rows)]
    fig = Figure(figsize=(5 * len(splits), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=True):
        title = {"dev": "dev split", "phase2": "Phase 2 rehearsal"}.get(split, "novel edits")
        for i, name in enumerate(names):
            runs = [r for r in systems[name] if split in r]
            if not runs:
                continue
            raw = [r[split]["raw"]["micro_ap"] for r in runs]
            post = [r[split]["post"]["micro_ap"] for r in runs if "post" in r[split]]
            top = post or raw
            ax.bar(i, np.mean(top), width=0.6, color=f"C{i}", alpha=0.35)
            if len(top) > 1:
                ax.errorbar(i, np.mean(top), yerr=np.std(top, ddof=1), color="k", capsize=4, lw=1)
            jitter = np.linspace(-0.12, 0.12, len(raw)) if len(raw) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), raw, facecolors="none", edgecolors=f"C{i}", s=22)
            if post:
                ax.scatter(i + np.asarray(jitter[: len(post)]), post, color=f"C{i}", s=22)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title}: μAP (bar: mean ± sd after post-processing)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("micro-average precision")
    axes[0].scatter([], [], facecolors="none", edgecolors="grey", s=22, label="raw, one seed")
    axes[0].scatter([], [], color="grey", s=22, label="post-processed, one seed")
    axes[0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "outputs" / "study"))
    ap.add_argument("--results", default=str(ROOT / "experiments" / "recipes"))
    ap.add_argument(
        "--baseline-postprocess",
        action="append",
        metavar="SPEC",
        help=f"post-processing for the untrained backbone; repeat for several "
        f"(default: {' and '.join(BASELINE_POSTPROCESS)})",
    )
    ap.add_argument(
        "extra", nargs="*", help="Hydra overrides for every run, after `--` (e.g. a tiny data set)"
    )
    args = ap.parse_args()
    out_root = Path(args.out)
    rows = []
    for seed in args.seeds:  # seed-major: every recipe has a first seed early
        for recipe in args.recipes:
            rows.append(run(recipe, seed, args.extra, out_root))
    rows.sort(key=lambda r: (args.recipes.index(r["recipe"]), r["seed"]))
    rows += baselines(
        args.seeds, args.extra, out_root, args.baseline_postprocess or BASELINE_POSTPROCESS
    )
    results = Path(args.results)
    with atomic_path(results / "results.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
    with atomic_path(results / "results.md") as tmp:
        tmp.write_text(table(rows) + "\n")
    plot(rows, results / "results.png")
    print(table(rows))


if __name__ == "__main__":
    main()
