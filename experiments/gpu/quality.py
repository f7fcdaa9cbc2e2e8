"""The GPU quality run: a large minidisc, the best recipe at 224 px for a few minutes on one GPU,
then every split scored (raw and with the run's fitted post-processor) next to the baselines.

    python experiments/gpu/quality.py                        # 50k training images, 8 minutes
    python experiments/gpu/quality.py --tiny                 # seconds on a CPU (tests it)
    python experiments/gpu/quality.py --minutes 4 -- loss.memory_size=4096   # Hydra overrides

The data set is minidisc with ``--n-train`` training images (its reference and query splits
are the default minidisc's, byte for byte, since every image has its own random stream), built
in ``<data-dir>/minidisc<N>`` if absent. Training is ``train.py experiment=<recipe>
trainer=<trainer> model.train_size=<size> model.eval_size=<eval size>``, with the LR schedule
sized for ``--epochs`` and a hard stop at ``--minutes`` (Lightning's ``max_time``; the run ends
with whatever step it reached). Results: ``<results>/<name>.json`` (scores, training minutes,
steps, the command) and the same table printed. See ``gpu_quality.sh`` for the device run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
import study  # noqa: E402

from fisc.baselines.phash import phash_descriptors  # noqa: E402
from fisc.data.minidisc import MinidiscSpec, build_minidisc  # noqa: E402
from fisc.files import atomic_path  # noqa: E402

TINY = {"n_train": 64, "size": 32, "eval_px": 32, "minutes": 1.0, "epochs": 1, "batch": 16,
        "workers": 0, "trainer": "cpu"}  # fmt: skip
TINY_DATA = ["data.minidisc.n_reference=16", "data.minidisc.n_dev_queries=12",
             "data.minidisc.n_phase2_queries=12", "++data.minidisc.n_novel_queries=12",
             "data.minidisc.image_size=64", "trainer.limit_train_batches=2",
             "postprocess='pca16,l2,stretch5:2.5'"]  # fmt: skip


def steps_done(run_dir: Path) -> int | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    import torch

    return int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="demo", help="the best CPU recipe")
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--size", type=int, default=224, help="training image size")
    p.add_argument("--eval-size", dest="eval_px", type=int, default=224)
    p.add_argument("--minutes", type=float, default=8.0, help="hard stop of training")
    p.add_argument("--epochs", type=int, default=6, help="the LR schedule's length")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--trainer", default="gpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_quality")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "gpu")
    p.add_argument("--tiny", action="store_true", help="a seconds-long CPU run (tests the script)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    a = p.parse_args()
    extra = list(a.overrides)
    if a.tiny:
        for k, v in TINY.items():
            setattr(a, k, v)
        extra = [*TINY_DATA, *extra]
    count = f"{a.n_train / 1000:g}k" if a.n_train >= 1000 else str(a.n_train)
    name = f"{a.recipe}-{count}-{a.size}px-{a.trainer}" + ("-tiny" if a.tiny else "")
    run_dir = a.out / name
    overrides = [
        f"paths.data_dir={a.data_dir}",
        f"data.root={a.data_dir}/minidisc{'tiny' if a.tiny else ''}{a.n_train}",
        f"data.minidisc.n_train={a.n_train}",
        f"trainer={a.trainer}",
        f"model.train_size={a.size}",
        f"model.eval_size={a.eval_px}",
        f"batch_size={a.batch}",
        f"eval_batch_size={a.batch}",
        f"num_workers={a.workers}",
        f"trainer.max_epochs={a.epochs}",
        f"trainer.check_val_every_n_epoch={a.epochs}",
        f"+trainer.max_time={{minutes: {a.minutes}}}",
        *extra,
    ]
    args = [f"experiment={a.recipe}", f"seed={a.seed}", *overrides, f"run_dir={run_dir}",
            "ckpt_path=auto", "logger.media=false"]  # fmt: skip
    command = f"python train.py {' '.join(args)}"
    cfg = study._compose(a.recipe, overrides)
    # the data set first, by every core (train.py would build it on one)
    build_minidisc(cfg.data.root, MinidiscSpec(**cfg.data.minidisc), workers=os.cpu_count() or 1)
    minutes = None
    if not (run_dir / "train_result.json").is_file():
        minutes = study.launch(args, name)
    device = "cuda" if a.trainer != "cpu" and cuda_available() else "cpu"
    scores = study._score_run(a.recipe, a.seed, overrides, run_dir, minutes, device=device)
    _, truths, queries, references, _ = study._data(cfg)
    phash = study.score(None, phash_descriptors(queries, progress=False),
                        phash_descriptors(references, progress=False), truths)  # fmt: skip
    payload = {"name": name, "command": command, "steps": steps_done(run_dir),
               "train_minutes": scores.get("train_minutes"), "scores": scores,
               "pHash (64-bit)": phash}  # fmt: skip
    try:
        import torch

        if torch.cuda.is_available():
            payload["device"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001  (a record without a device name is still a record)
        pass
    a.results.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.results / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    for split in truths:
        row = [f"{split:7s}"]
        for label, s in (("trained", scores), ("pHash", phash)):
            for kind, v in s[split].items():
                row.append(f"{label} {kind} μAP {v['micro_ap']:.3f} R@P90 {v['recall_at_p90']:.3f}")
        print(" | ".join(row))
    print(f"steps {payload['steps']}, training {payload['train_minutes']} min -> "
          f"{a.results / (name + '.json')}")  # fmt: skip


if __name__ == "__main__":
    main()
