"""The recipe's post-processor (``postprocess``): checked against the training split before
training, fitted on it for the last checkpoint after training."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from fisc.train.config import ConfigError
from fisc.train.sources import resolve_data

log = logging.getLogger(__name__)


def check_postprocess_fit_set(cfg: DictConfig, groups: dict) -> None:
    """Before training: the recipe's post-processing can be fitted on the training split
    (e.g. ``pca255`` needs 256 images), so a run never fails at its end for that reason."""
    spec = cfg.get("postprocess")
    if not spec or cfg.trainer.get("fast_dev_run"):  # fast_dev_run writes no checkpoint
        return
    from fisc.postprocess.spec import PostProcessor

    need = PostProcessor(spec).min_fit_rows()
    train_images, _ = resolve_data(groups["data"])
    if len(train_images) < need:
        raise ConfigError(
            f"postprocess {spec!r} is fitted on the training split at the end of training and "
            f"needs at least {need} training images; the data has {len(train_images)}. Use a "
            "smaller spec (e.g. pca_whiten8,l2) or postprocess=null"
        )


def fit_postprocess(cfg: DictConfig, groups: dict, checkpoint: str | None) -> dict | None:
    """The recipe's ``postprocess`` fitted on the training split's descriptors of
    ``checkpoint`` and saved beside it (``last.postprocess.npz`` + ``.json``); reused when one
    fitted with the same spec for the same checkpoint is there. ``None`` without a spec."""
    spec = cfg.get("postprocess")
    if not spec or checkpoint is None or cfg.trainer.get("fast_dev_run"):
        return None  # fast_dev_run: a debugging pass, not a run to ship
    from fisc.inference import fit_run_postprocessor, run_postprocess_path
    from fisc.postprocess.spec import PostProcessor
    from fisc.provenance import sha256_of

    path = run_postprocess_path(checkpoint)
    pp = None
    if path.is_file():
        try:
            pp = PostProcessor.load(path)
        except (OSError, ValueError, KeyError) as e:
            log.warning("refitting the post-processor: %s is unreadable (%s)", path, e)
        fitted_for = (pp.fit_set or {}).get("checkpoint_sha256") if pp is not None else None
        if pp is not None and (pp.spec != spec or fitted_for != sha256_of(checkpoint)):
            pp = None
    if pp is None:
        train_images, _ = resolve_data(groups["data"])
        accelerator = str(cfg.trainer.get("accelerator", "cpu"))
        device = "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
        log.info("fitting post-processing %r on %d training images", spec, len(train_images))
        path, pp = fit_run_postprocessor(
            checkpoint,
            train_images,
            spec,
            device=device,
            batch_size=cfg.eval_batch_size,
            num_workers=cfg.num_workers,
            progress=True,
            per_image=device == "cpu",  # CPU: the fit does not depend on batching
        )
    log.info("post-processor %r (%d-d) for %s: %s", pp.spec, pp.dims, checkpoint, path)
    return {"file": str(path), "spec": pp.spec, "dims": pp.dims, "fit_set": pp.fit_set}
