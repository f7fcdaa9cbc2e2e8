"""What a run shows besides numbers: augmentation samples at the start, and at every
validation a PR curve, a retrieval gallery and a results file (``<run_dir>/val_reports/``),
also sent to W&B as media when the logger is W&B."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_lightning import Callback

log = logging.getLogger(__name__)


def _hwc_uint8(view) -> np.ndarray:
    x = view.numpy() if isinstance(view, torch.Tensor) else np.asarray(view)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    return x.astype(np.uint8)


def _strip(paths: list[str | Path | None], size: int = 128) -> Image.Image:
    """Images side by side (a grey tile where a path is missing)."""
    canvas = Image.new("RGB", (size * len(paths), size), (128, 128, 128))
    for i, p in enumerate(paths):
        if p is not None:
            with Image.open(p) as img:
                canvas.paste(img.convert("RGB").resize((size, size)), (i * size, 0))
    return canvas


class RunMedia(Callback):
    def __init__(self, run_dir: str | Path, gallery: int = 8, samples: int = 6):
        self.out = Path(run_dir) / "val_reports"
        self.gallery, self.samples = gallery, samples

    def _wandb(self, trainer):
        from pytorch_lightning.loggers import WandbLogger

        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                return lg
        return None

    def on_train_start(self, trainer, pl_module) -> None:
        wandb_logger = self._wandb(trainer)
        dm = trainer.datamodule
        train_set = getattr(dm, "train_set", None)
        if not trainer.is_global_zero or wandb_logger is None or train_set is None:
            return
        pairs = []
        for i in range(min(self.samples, len(train_set))):
            a, b = train_set[i][:2]
            pairs.append(np.concatenate([_hwc_uint8(a), _hwc_uint8(b)], axis=1))
        wandb_logger.log_image(
            "train/augment_samples",
            pairs,
            step=trainer.global_step,
            caption=[f"image {i}: view a | view b (CPU stage)" for i in range(len(pairs))],
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        last = getattr(pl_module, "last_validation", None)
        if trainer.sanity_checking or not trainer.is_global_zero or last is None:
            return
        from fisc.reports import write_report

        queries, references, ground_truth, images = last
        pl_module.last_validation = None
        epoch = trainer.current_epoch
        out = self.out / f"epoch{epoch:03d}"
        paths = write_report(
            out,
            queries,
            references,
            ground_truth,
            images=images,
            n_gallery=self.gallery,
            name=f"epoch {epoch}",
        )
        wandb_logger = self._wandb(trainer)
        if wandb_logger is None:
            return
        cases = json.loads(paths["json"].read_text())["gallery"]
        strips, captions = [], []
        for case in cases["false_positives"]:
            strips.append(
                _strip(
                    [
                        images[case["query"]],
                        images[case["reference"]],
                        images.get(case["true_reference"]) if case["true_reference"] else None,
                    ]
                )
            )
            captions.append(
                f"{case['query']} -> {case['reference']} (rank {case['rank']}, wrong); "
                f"true: {case['true_reference']}"
            )
        step = trainer.global_step
        wandb_logger.log_image("val/pr_curve", [str(paths["pr_curve"])], step=step)
        if strips:
            wandb_logger.log_image("val/false_positives", strips, step=step, caption=captions)
        missed = cases["missed"]
        if missed:
            wandb_logger.log_image(
                "val/missed_matches",
                [_strip([images[c["query"]], images[c["reference"]]]) for c in missed],
                step=step,
                caption=[f"{c['query']} | {c['reference']} (not retrieved)" for c in missed],
            )
