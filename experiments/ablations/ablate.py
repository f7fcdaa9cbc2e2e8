"""Ablations of the demo recipe at (about) equal training wall time: which levers move held-out
quality on 2 CPU cores.

    python experiments/ablations/ablate.py                    # every variant, seed 0
    python experiments/ablations/ablate.py --variants base lr4x --seeds 0 1
    python experiments/ablations/ablate.py --list             # the variants and their overrides

Every variant is ``python train.py experiment=demo <BASE> <budget> <its overrides>`` (BASE
pins the demo recipe as it was when the ablations ran), trained once per seed in
``outputs/ablations/<variant>/seed<s>`` (a relaunch skips finished runs) and scored on every
split (raw and with the run's own fitted post-processor), with the last logged
``train/pos_top1`` (in-batch positive top-1 accuracy: does the model fit its training task?)
and the measured training minutes. The budget is ``BUDGET_STEPS`` optimizer steps at the
demo's cost per step; a variant that costs more per step (larger images) gets proportionally
fewer steps, so that all train for about the same wall time, which the table reports.
Results: ``experiments/ablations/results.{json,md}``; baselines (untrained backbone, pHash)
come from the learning-curves cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
sys.path.insert(0, str(ROOT / "experiments" / "curves"))
import curves  # noqa: E402
import study  # noqa: E402

from fisc.files import atomic_path  # noqa: E402

# the demo recipe as it was when the ablations ran (`make demo` has since moved on to their
# findings): disc_full edits on both views, PCA-whitening to 128 dims
BASE = ["augment=disc_full", "postprocess='pca_whiten128,l2'"]
EPOCH = 15  # optimizer steps per epoch: 1000 minidisc training images / batch 64 (drop_last)
BUDGET_STEPS = 120  # 8 epochs: twice the demo's 4, about 6 minutes on 2 cores
BIG = "data.root=${paths.data_dir}/minidisc10k data.minidisc.n_train=10000"
# minidisc with DISC21-sized images (longest side 640 px, short side about 390-640): the
# training JPEGs are large enough for reduced-scale decoding to matter
BIG640 = "data.root=${paths.data_dir}/minidisc640 data.minidisc.image_size=640"


def epochs(steps: int) -> list[str]:
    """Train ``steps`` steps (whole epochs); validate once, at the end (scoring is done after)."""
    n = steps // EPOCH
    return [f"trainer.max_epochs={n}", f"trainer.check_val_every_n_epoch={n}"]


# name -> (what it tests, overrides). Budget overrides first; a variant's own come after.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # not an ablation: the current `make demo` recipe as it is (no BASE, its own budget), for
    # its seed spread (`--variants demo --seeds 0 1 2`)
    "demo": ("the current demo recipe, as `make demo` trains it", []),
    "base": ("the demo recipe at the ablation budget", epochs(BUDGET_STEPS)),
    # like `demo` (today's recipe and budget, no BASE): what augment.work_side=1 costs in quality
    "demo_work_side1": (
        "the current demo recipe with its edits after the first crop at the view size "
        "(augment.work_side=1), for its quality cost",
        ["augment.work_side=1"],
    ),
    # like `demo`, on 640 px images: what the GPU-feeding settings cost in quality where they
    # change the decode (the default decodes these JPEGs at 1/2 scale, the GPU-feeding
    # decode_min_side at 1/4; on minidisc's 160 px images both decode in full)
    "demo640": (
        "the current demo recipe on minidisc built at 640 px (JPEGs decode at 1/2 scale: "
        "decode_min_side defaults to 2 x the train size)",
        BIG640.split(),
    ),
    "demo640_gpufeed": (
        "demo640 with the GPU-feeding settings (augment.work_side=1 data.decode_min_side=96: "
        "JPEGs decode at 1/4 scale, edits after the first crop at the view size)",
        [*BIG640.split(), "augment.work_side=1", "data.decode_min_side=96"],
    ),
    "demo640_work_side1": (
        "demo640 with augment.work_side=1 only (JPEGs still decode at 1/2 scale): which of the "
        "two GPU-feeding settings costs what",
        [*BIG640.split(), "augment.work_side=1"],
    ),
    "demo640_decode96": (
        "demo640 with data.decode_min_side=96 only (JPEGs decode at 1/4 scale, edits at the "
        "decoded size): the other half of the GPU-feeding settings",
        [*BIG640.split(), "data.decode_min_side=96"],
    ),
    "lr4x": ("4x the learning rate (1e-3 at batch 64)", [*epochs(BUDGET_STEPS), "optim.lr=4e-3"]),
    "lr_half": ("half the learning rate", [*epochs(BUDGET_STEPS), "optim.lr=5e-4"]),
    "tau0.1_nokoleo": (
        "InfoNCE temperature 0.1 and no KoLeo term (isc3rd_mini's loss)",
        [*epochs(BUDGET_STEPS), "loss.temperature=0.1", "loss.entropy_weight=0"],
    ),
    "lr_const": (
        "no cosine decay (constant after warm-up)",
        [*epochs(BUDGET_STEPS), "optim.min_lr_ratio=1.0"],
    ),
    "train10k": (
        "10,000 training images instead of 1,000 (each seen about once)",
        [
            *BIG.split(),
            *epochs(EPOCH),
            f"trainer.limit_train_batches={BUDGET_STEPS}",
            f"optim.warmup_epochs={EPOCH / BUDGET_STEPS}",
        ],
    ),  # fmt: skip
    "res128": (
        "train at 128 px, evaluate at 160 px (fewer steps: (96/128)^2 of the budget)",
        [
            *epochs(round(BUDGET_STEPS * (96 / 128) ** 2 / EPOCH) * EPOCH),
            "model.train_size=128",
            "model.eval_size=160",
        ],
    ),  # fmt: skip
    "queue4096": (
        "InfoNCE with a 4096-descriptor cross-batch memory of negatives",
        [*epochs(BUDGET_STEPS), "loss.memory_size=4096"],
    ),
    "edits_light": (
        "milder edits: chains of 1-2 edits instead of 1-4",
        [*epochs(BUDGET_STEPS), "augment=disc_light"],
    ),
    "work_side1": (
        "the edits after the first crop run at the view size (augment.work_side=1), not at the "
        "image's (what makes DISC21-sized images cheap to edit)",
        [*epochs(BUDGET_STEPS), "augment.work_side=1"],
    ),
    "edits_asym": (
        "one view near-pristine (like a reference), the other fully edited (like a query)",
        [*epochs(BUDGET_STEPS), "augment=disc_asym"],
    ),
}


# variants on today's demo recipe at its own budget (no BASE)
FULL_DEMO = {
    "demo",
    "demo_work_side1",
    "demo640",
    "demo640_gpufeed",
    "demo640_work_side1",
    "demo640_decode96",
}


def pos_top1(run_dir: Path, last: int = 3) -> float | None:
    """Mean of the last ``last`` logged ``train/pos_top1`` values of the run."""
    values = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with path.open() as f:
            values += [float(r["train/pos_top1"]) for r in csv.DictReader(f) if
                       r.get("train/pos_top1")]  # fmt: skip
    return round(sum(values[-last:]) / len(values[-last:]), 4) if values else None


def run(name: str, seed: int, extra: list[str], out: Path) -> dict:
    run_dir = out / name / f"seed{seed}"
    overrides = [*(BASE if name not in FULL_DEMO else []), *VARIANTS[name][1], *extra]
    cached = run_dir / "scores.json"
    if (run_dir / "config.yaml").is_file():  # e.g. `demo` after its epochs changed
        from omegaconf import OmegaConf

        now = study._compose("demo", [f"seed={seed}", *overrides]).trainer.max_epochs
        then = OmegaConf.load(run_dir / "config.yaml").trainer.max_epochs
        if then != now:
            sys.exit(f"{run_dir} was trained for {then} epochs, the variant now trains {now}: "
                     f"move that folder away to retrain it")  # fmt: skip
    if cached.is_file():
        return json.loads(cached.read_text())
    minutes = None
    if not (run_dir / "train_result.json").is_file():
        args = ["experiment=demo", f"seed={seed}", *overrides, f"run_dir={run_dir}",
                "ckpt_path=auto", "logger.media=false"]  # fmt: skip
        minutes = study.launch(args, f"{name} seed {seed}")
    scores = study._score_run("demo", seed, overrides, run_dir, minutes)
    scores.update(variant=name, pos_top1=pos_top1(run_dir), overrides=overrides)
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def table(rows: list[dict], base: dict) -> str:
    """One row per run: each split's μAP and R@P90 as ``raw / post-processed``."""
    splits = [s for s in study.SPLITS if any(s in r for r in rows)]
    head = ["variant", "seed", "train min", "pos_top1"] + [
        f"{study.SPLIT_TITLES[s]} {m} raw / post" for s in splits for m in ("μAP", "R@P90")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(scores: dict) -> list[str]:
        out = []
        for s in splits:
            for m in ("micro_ap", "recall_at_p90"):
                got = [f"{scores[s][k][m]:.3f}" for k in ("raw", "post") if k in scores.get(s, {})]
                out.append(" / ".join(got) or "–")
        return out

    for r in rows:
        minutes = f"{r['train_minutes']:.1f}" if r.get("train_minutes") else "–"
        top1 = f"{r['pos_top1']:.2f}" if r.get("pos_top1") is not None else "–"
        lines.append("| " + " | ".join([r["variant"], str(r["seed"]), minutes, top1,
                                        *cells(r)]) + " |")  # fmt: skip
    for name, scores in base.items():
        lines.append("| " + " | ".join([name, "–", "–", "–", *cells(scores)]) + " |")
    return "\n".join(lines + spread(rows, splits))


def spread(rows: list[dict], splits: list[str]) -> list[str]:
    """Mean ± sd over seeds (sample sd) of the variants run with more than one seed."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == name]
        if len(runs) < 2:
            continue
        if not out:
            head = ["variant", "seeds"] + [
                f"{study.SPLIT_TITLES[s]} {m} {k}"
                for s in splits
                for m in ("μAP", "R@P90")
                for k in ("raw", "post")
            ]
            out = ["", "Mean ± sd over seeds:", "", "| " + " | ".join(head) + " |",
                   "|" + "---|" * len(head)]  # fmt: skip
        cells = []
        for s in splits:
            for m in ("micro_ap", "recall_at_p90"):
                for k in ("raw", "post"):
                    v = np.array([r[s][k][m] for r in runs if k in r.get(s, {})])
                    cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else "–")
        seeds = ",".join(str(r["seed"]) for r in runs)
        out.append("| " + " | ".join([name, seeds, *cells]) + " |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablations")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "ablations")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    a = p.parse_args()
    if a.list:
        for name, (what, overrides) in VARIANTS.items():
            print(f"{name:12s} {what}\n{'':12s} {' '.join(overrides)}")
        return
    for v in a.variants:
        for s in a.seeds:
            run(v, s, a.overrides, a.out)
    # the table: every variant and seed scored so far (earlier invocations included), in order
    rows = [json.loads(path.read_text()) for v in VARIANTS
            for path in sorted((a.out / v).glob("seed*/scores.json"))]  # fmt: skip
    cfg = study._compose("demo", [*BASE, *a.overrides])
    base = curves.baselines(cfg, study._data(cfg), 0, ROOT / "outputs" / "curves")
    if any(BIG640.split()[0] in r["overrides"] for r in rows):  # their own data's baselines
        cfg = study._compose("demo", [*BIG640.split(), *a.overrides])
        big = curves.baselines(cfg, study._data(cfg), 0, ROOT / "outputs" / "curves" / "640")
        base.update({f"{name}, 640 px": scores for name, scores in big.items()})
    a.results.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.results / "results.json") as tmp:
        tmp.write_text(json.dumps({"runs": rows, "baselines": base}, indent=2) + "\n")
    md = table(rows, base)
    with atomic_path(a.results / "results.md") as tmp:
        tmp.write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
