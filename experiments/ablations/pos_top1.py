"""Why does ``train/pos_top1`` stay low? In-batch positive top-1 of a trained model on pairs of
different kinds, each image's partner to be found among the other 2 x 64 - 1 views of a batch
(what the InfoNCE loss asks during training).

    python experiments/ablations/pos_top1.py [--checkpoint CKPT] [--images 128]

Pair kinds (views at the model's training size, keyed randomness, the model in eval mode):
- ``training pairs``: two views of the recipe's training pipeline (what ``pos_top1`` logs);
- ``reference vs query``: one unedited view (resized, like a reference) and one training view
  (like a query): the task the benchmark asks;
- ``crop stage only``: two views of the pipeline's first stage (the optional random crop);
- ``op: <name>``: an unedited view and a view with only that edit.
Output: ``experiments/ablations/pos_top1.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]

from fisc.augment.pipeline import AugmentConfig  # noqa: E402
from fisc.data.datasets import TwoViewDataset  # noqa: E402
from fisc.data.disc21 import Disc21  # noqa: E402
from fisc.files import atomic_path  # noqa: E402
from fisc.inference import DescriptorPipeline, resolve_preprocess  # noqa: E402
from fisc.train.config import typed  # noqa: E402

PRISTINE = {"stages": []}


def pos_top1(emb_a: torch.Tensor, emb_b: torch.Tensor, batch: int = 64) -> float:
    """Fraction of views whose nearest other view, within batches of ``batch`` pairs, is their
    partner (the loss's ``pos_top1`` on a 2 x batch batch)."""
    hits, total = 0, 0
    for s in range(0, len(emb_a) - batch + 1, batch):
        x = torch.cat([emb_a[s : s + batch], emb_b[s : s + batch]])
        sim = x @ x.T
        sim.fill_diagonal_(float("-inf"))
        partner = torch.cat([torch.arange(batch) + batch, torch.arange(batch)])
        hits += int((sim.argmax(1) == partner).sum())
        total += 2 * batch
    return hits / max(total, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path,
                   default=ROOT / "outputs/curves/demo/seed0/checkpoints/last.ckpt")  # fmt: skip
    p.add_argument("--data", type=Path, default=ROOT / "data" / "minidisc")
    p.add_argument("--augment", default="disc_full")
    p.add_argument("--exclude", nargs="*", default=["meme", "screenshot"])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "ablations" / "pos_top1.md")
    a = p.parse_args()
    if not a.checkpoint.is_file():
        sys.exit(f"no checkpoint {a.checkpoint}: run `make curves` (or pass --checkpoint)")
    pipe = DescriptorPipeline.from_checkpoint(a.checkpoint)
    size = pipe.model_cfg.train_size
    norm = resolve_preprocess(pipe.model_cfg, size)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        excluded = f"augment.exclude_ops=[{','.join(a.exclude)}]"
        cfg = compose("train", overrides=[f"augment={a.augment}", excluded])
    aug = typed(cfg, "augment")  # the augment group, checked as training checks it
    view = aug.views[0]
    ops = [op for op in view["stages"][-1]["ops"] if op not in aug.exclude_ops]
    images = Disc21(a.data).images("training")
    images = images.subset(images.ids[: a.images])

    def embed(views: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = AugmentConfig(name="probe", views=views, exclude_ops=aug.exclude_ops)
        ds = TwoViewDataset(images, cfg.build(size), seed=1)
        out = ([], [])
        with torch.no_grad():
            for s in range(0, len(ds), 64):
                items = [ds[i] for i in range(s, min(s + 64, len(ds)))]
                for v in range(2):
                    x = torch.stack([it[v] for it in items]).float().div_(255.0)
                    out[v].append(pipe.model(norm.normalise_batch(x)))
        return torch.cat(out[0]), torch.cat(out[1])

    rows = [
        ("training pairs", [view, view]),
        ("reference vs query", [PRISTINE, view]),
        ("crop stage only", [{"stages": view["stages"][:1]}] * 2),
    ]
    rows += [(f"op: {op}", [PRISTINE, {"stages": [{"select": "all", "ops": {op: {"p": 1.0}}}]}])
             for op in ops]  # fmt: skip
    results = []
    for name, views in rows:
        acc = pos_top1(*embed(views))
        results.append((name, acc))
        print(f"{name:24s} {acc:.3f}", flush=True)
    ckpt = a.checkpoint.relative_to(ROOT) if a.checkpoint.is_relative_to(ROOT) else a.checkpoint
    head = [
        f"In-batch positive top-1 (batches of 64 pairs, {len(images)} training images, "
        f"{size} px, model in eval mode) of `{ckpt}`, "
        f"augment `{a.augment}` minus {a.exclude}. Command: "
        f"`python experiments/ablations/pos_top1.py`.",
        "",
        "| pairs | pos_top1 |",
        "|---|---:|",
    ]
    fixed, per_op = results[:3], sorted(results[3:], key=lambda r: r[1])
    body = [f"| {n} | {v:.3f} |" for n, v in fixed + per_op]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        tmp.write_text("\n".join(head + body) + "\n")
    print(f"mean over single ops {np.mean([v for _, v in per_op]):.3f} -> {a.out}")


if __name__ == "__main__":
    main()
