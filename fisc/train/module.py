"""LightningModule: contrastive training of a descriptor model, validation μAP every epoch."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, replace

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from fisc.descriptors import Descriptors
from fisc.evaluation import evaluate
from fisc.losses import build_loss
from fisc.models.descriptor import ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig
from fisc.train.optim import OptimConfig, build_optimizer

log = logging.getLogger(__name__)


class CopyDetectionModule(pl.LightningModule):
    """``model`` and ``optim`` are the checked groups (:func:`fisc.train.config.check_config`),
    ``loss`` the loss group's checked config (``_target_``, ``name`` and the loss's arguments),
    built here by :func:`fisc.losses.build_loss`."""

    def __init__(
        self,
        model: ModelConfig,
        loss: Mapping,
        optim: OptimConfig,
        batch_size: int,
        load_weights: bool = True,
        num_classes: int | None = None,
        lr_scale: float = 1.0,
    ):
        super().__init__()
        # a record of the run's settings, as plain dicts (checkpoints load with weights_only)
        self.save_hyperparameters(
            {
                "model": asdict(model),
                "loss": dict(loss),
                "optim": asdict(optim),
                "batch_size": batch_size,
                "load_weights": load_weights,
                "num_classes": num_classes,
                "lr_scale": lr_scale,
            }
        )
        self.model_cfg = model
        if not load_weights:  # the checkpoint's state dict will replace them anyway
            self.model_cfg = replace(model, weights=WeightsConfig(source="none"))
        self.model = build_descriptor_model(self.model_cfg)
        self.loss = build_loss(loss, self.model_cfg.dims, num_classes)
        self.optim_cfg = optim
        self._val_outputs: list[list[tuple[np.ndarray, np.ndarray]]] = [[], []]
        self.last_validation = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    # training -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fisc_rng"] = rng_states()  # what the next training step draws from

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("fisc_rng")

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # a resumed run: the RNG as it was after the checkpoint's step (restored here, once
        # the resumed loop's own set-up is done, so nothing else draws from it first)
        states, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if states is not None:
            restore_rng_states(states)

    def training_step(self, batch, batch_idx):
        view_a, view_b, index = batch
        n = view_a.shape[0]
        ids = torch.cat([index, index])
        images = [view_a, view_b]
        extra = self.loss.extra_views(view_b, index)  # e.g. SSCD's mixed images
        if extra is not None:
            images.append(extra.images)
            ids = torch.cat([ids, extra.ids])
        embeddings = self.model(torch.cat(images)).float()
        out = self.loss(embeddings, ids, **(extra.loss_kwargs if extra is not None else {}))
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        for key, value in out.logs().items():
            self.log(f"train/{key}", value, prog_bar=key.endswith("top1"), batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return out.loss

    def scaled_lr(self) -> float:
        """``optim.lr`` for ``base_batch`` images, scaled to the global batch by the rule
        ``optim.lr_scaling`` (linear, sqrt or none), times the stage's ``lr_scale``."""
        o = self.optim_cfg
        power = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}[o.lr_scaling]
        return o.lr * (self.hparams.batch_size / o.base_batch) ** power * self.hparams.lr_scale

    def configure_optimizers(self):
        o = self.optim_cfg
        trainable = torch.nn.ModuleDict({"model": self.model, "loss": self.loss})
        # the optim group's _target_; no weight decay on biases and norm parameters
        opt = build_optimizer(o, trainable, self.scaled_lr())
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(total - 1, int(o.warmup_epochs * per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warmup, total, o.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # validation ---------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_outputs = [[], []]

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        pixels, index, _ = batch
        vectors = self.model(pixels).float()
        self._val_outputs[dataloader_idx].append((index.cpu().numpy(), vectors.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        if self.trainer.sanity_checking or dm is None or dm.validation is None:
            return
        v = dm.validation
        queries = _merge(self._val_outputs[0], v.queries.ids)
        references = _merge(self._val_outputs[1], v.references.ids)
        self._val_outputs = [[], []]
        ground_truth = v.ground_truth
        if len(queries.ids) < len(v.queries) or len(references.ids) < len(v.references):
            # limit_val_batches / fast_dev_run: score the covered part only
            log.warning(
                "validation covered %d/%d queries and %d/%d references: partial score",
                len(queries.ids),
                len(v.queries),
                len(references.ids),
                len(v.references),
            )
            covered = set(references.ids.tolist())
            ground_truth = {
                q: (r if r in covered else None)
                for q, r in ground_truth.items()
                if q in set(queries.ids.tolist())
            }
        if not any(r is not None for r in ground_truth.values()):
            log.warning("no matching query among the validated images: no validation score")
            return
        result = evaluate(queries, references, ground_truth, progress=False)  # Lightning: own bar
        images = dict(zip(v.queries.ids, v.queries.paths, strict=True))
        images.update(zip(v.references.ids, v.references.paths, strict=True))
        self.last_validation = (queries, references, ground_truth, images)  # for RunMedia
        for key in ("micro_ap", "recall_at_p90", "recall_at_1"):
            self.log(
                f"val/{key}",
                float(getattr(result, key)),
                prog_bar=key == "micro_ap",
                sync_dist=False,
                rank_zero_only=False,
            )


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], ids) -> Descriptors:
    """Descriptors of one validation set from all ranks, de-duplicated by dataset index
    (the distributed sampler pads with repeats)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, parts)
        parts = [p for rank_parts in gathered for p in rank_parts]
    if not parts:
        return Descriptors(np.asarray([], dtype=str), np.zeros((0, 1), np.float32))
    index = np.concatenate([p[0] for p in parts])
    vectors = np.concatenate([p[1] for p in parts])
    index, first = np.unique(index, return_index=True)
    return Descriptors(np.asarray(ids)[index], vectors[first])


def rng_states() -> dict:
    """Python's, numpy's and torch's (CPU and CUDA) global RNG states, as tensors and plain
    containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    random.setstate(_tuples(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(x):
    """``random.setstate`` wants the tuples a checkpoint round trip may turn into lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
