"""Freezing: a fisc training checkpoint -> an artifact folder (layout:
:mod:`fisc.export.artifact`)."""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
from pathlib import Path

import timm
import torch

from fisc.checkpoints import load_checkpoint
from fisc.data.disc21 import ImageSet
from fisc.descriptors.h5io import write_vectors
from fisc.export.artifact import (
    CARD_FILE,
    FORMAT,
    GOLDEN_FILE,
    GOLDEN_FINAL_FILES,
    MODEL_FILE,
    POSTPROCESS_FILE,
    PROBE_DIR,
    ArtifactError,
)
from fisc.export.card import _jsonable, weights_metadata
from fisc.export.golden import GOLDEN_BATCH_SIZE, _golden
from fisc.export.load import _pipeline
from fisc.export.manifest import manifested_dir
from fisc.export.probes import _copy_probe, synthetic_probe_images
from fisc.inference import (
    DescriptorPipeline,
    load_fitted_postprocessor,
    run_postprocess_path,
    run_postprocess_spec,
)
from fisc.models.descriptor import DescriptorModel
from fisc.provenance import git_sha, sha256_of


def _state_dict(model: DescriptorModel) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: give every tensor its own contiguous copy
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _postprocessor_for(checkpoint: Path, postprocess: str | Path | None) -> Path | None:
    """The fitted post-processor file to freeze with ``checkpoint``: ``"run"`` takes the
    run's (beside the checkpoint; an error if its recipe has a spec but none was fitted),
    ``None`` none, anything else is a path."""
    if postprocess is None:
        return None
    if postprocess != "run":
        return Path(postprocess)
    path = run_postprocess_path(checkpoint)
    if path.is_file():
        return path
    spec = run_postprocess_spec(checkpoint)
    if spec:
        raise ArtifactError(
            f"the run of {checkpoint} post-processes with {spec!r}, but no fitted "
            f"post-processor is beside the checkpoint ({path.name}): fit it with `fisc "
            f"fit-postprocess --checkpoint {checkpoint} --train-images DIR`, or freeze the "
            "raw model with --no-postprocess"
        )
    return None


def freeze(
    checkpoint: str | Path,
    out_dir: str | Path,
    probe_images: ImageSet | None = None,
    postprocess: str | Path | None = "run",
) -> Path:
    """Turn a fisc training checkpoint into an artifact directory ``out_dir`` (which must not
    exist). ``postprocess``: ``"run"`` (default) freezes the run's fitted post-processor
    (``<checkpoint>.postprocess.npz`` beside the checkpoint) if the run has one, ``None``
    none, or the path of a fitted ``.npz``. Written in a temporary sibling directory, renamed
    into place when complete."""
    out_dir = Path(out_dir)
    checkpoint = Path(checkpoint)
    if out_dir.exists():
        raise FileExistsError(f"artifact directory {out_dir} already exists; refusing to overwrite")
    source = DescriptorPipeline.from_checkpoint(checkpoint)
    model, cfg = source.model, source.model_cfg
    raw = load_checkpoint(checkpoint)
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    training_config = {k: v for k, v in hparams.items() if k != "model"} or None
    pp_path = _postprocessor_for(checkpoint, postprocess)
    pp = load_fitted_postprocessor(pp_path, checkpoint) if pp_path is not None else None
    if pp is not None and pp.in_dims != cfg.dims:
        raise ValueError(
            f"post-processor {pp_path} expects {pp.in_dims}-d input, the model gives {cfg.dims}-d"
        )

    with manifested_dir(out_dir) as tmp:
        from safetensors.torch import save_file

        metadata = weights_metadata(model, cfg, pp.spec if pp is not None else None)
        save_file(_state_dict(model), str(tmp / MODEL_FILE), metadata=metadata)
        if probe_images is None:
            probe = synthetic_probe_images(tmp / PROBE_DIR)
        else:
            probe = _copy_probe(probe_images, tmp / PROBE_DIR)
        pp_card = None
        if pp is not None:
            shutil.copyfile(pp_path, tmp / POSTPROCESS_FILE)
            pp_card = {
                "file": POSTPROCESS_FILE,
                "spec": pp.spec,
                "in_dims": pp.in_dims,
                "dims": pp.dims,
                "max_dims": pp.max_dims,
                "role_dependent": pp.role_dependent,
                "fit_set": pp.fit_set,
            }
        # golden descriptors from the pipeline as reloaded from the artifact's own files
        frozen = _pipeline(cfg, tmp, pp_card)
        golden = _golden(frozen, probe)
        for name, descriptors in golden.items():
            write_vectors(tmp / name, descriptors)
        card = {
            "format": FORMAT,
            "timm": {"name": cfg.name, "version": timm.__version__},
            "model": dataclasses.asdict(cfg),
            "preprocess": frozen.preprocess.card(),
            "dims": frozen.dims,
            "model_dims": cfg.dims,
            "pooling": cfg.pooling,
            "postprocess": pp_card,
            "golden": {
                "file": GOLDEN_FILE,
                "final": {r: n for r, n in GOLDEN_FINAL_FILES.items() if n in golden},
                "probe_dir": PROBE_DIR,
                "n_images": len(probe),
                "batch_size": GOLDEN_BATCH_SIZE,
                "device": "cpu",
                "stage": "model output (file); final descriptors per role (final)",
            },
            "training_config": training_config,
            "source_checkpoint": {"name": checkpoint.name, "sha256": sha256_of(checkpoint)},
            "git_sha": git_sha(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        }
        (tmp / CARD_FILE).write_text(
            json.dumps(_jsonable(card), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return out_dir
