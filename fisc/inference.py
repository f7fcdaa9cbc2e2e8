"""The inference contract: the one path by which fisc turns images into final descriptors.

A :class:`DescriptorPipeline` is a descriptor model, its preprocessing (resolved once from the
model's config by :func:`~fisc.data.preprocess.resolve_preprocess`) and an optional fitted
post-processor. It has the two roles of the challenge, :meth:`~DescriptorPipeline.queries` and
:meth:`~DescriptorPipeline.references` (``score_norm``, ``isc_norm`` and ``stretch`` treat them
differently).
Extraction, validation during training, the demo, the recipes study, ``fisc freeze``, the
Phase 1 / Phase 2 exports and the runtime export checks all go through it, so what is evaluated
is what is exported.

Where a pipeline comes from:

- :meth:`DescriptorPipeline.from_checkpoint`: a training checkpoint, with no post-processor,
  the run's fitted one (``postprocess="run"``: ``<checkpoint>.postprocess.npz`` beside it, fitted
  at the end of training or by ``fisc fit-postprocess``) or a given ``.npz`` file;
- :meth:`DescriptorPipeline.from_artifact`: a frozen artifact (``fisc freeze``), verified;
- :func:`load_pipeline`: either of those, with the checks ``fisc extract`` makes on its
  options (``fisc extract`` and ``fisc.load`` both use it; :func:`source_kind` tells which
  kind a path is);
- :func:`fit_run_postprocessor`: fit a spec on a run's training images and save it beside
  the checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import resolve_preprocess
from fisc.descriptors import Descriptors
from fisc.descriptors.extract import extract_descriptors
from fisc.models.descriptor import ModelConfig
from fisc.provenance import sha256_of

if TYPE_CHECKING:
    from fisc.postprocess.spec import PostProcessor

log = logging.getLogger(__name__)

ROLES = ("query", "reference")
RUN_POSTPROCESS_SUFFIX = ".postprocess.npz"  # last.ckpt -> last.postprocess.npz, beside it
RUN_CONFIG_FILE = "config.yaml"  # <run_dir>/config.yaml, <run_dir>/checkpoints/*.ckpt


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


class DescriptorPipeline:
    """Model + preprocessing + optional fitted post-processor; images -> final descriptors.

    ``describe(images, role)`` runs the model on every image on its own (eval mode, no
    gradient) and applies the post-processor in that role. ``raw`` stops before
    post-processing; ``finalize`` applies it to raw descriptors computed earlier (one
    extraction scored with and without post-processing). Extraction options
    (``batch_size``, ``num_workers``, ``device``, ``on_error``, ``progress``, ``per_image``)
    pass through to :func:`fisc.descriptors.extract.extract_descriptors`; ``device`` defaults
    to where the model is (:attr:`device`, :meth:`to`).
    """

    def __init__(
        self,
        model: nn.Module,
        model_cfg: ModelConfig,
        postprocessor: PostProcessor | None = None,
        size: int | None = None,
        artifact_hash: str | None = None,
    ):
        self.model = model.eval()
        self.model_cfg = model_cfg
        self.preprocess = resolve_preprocess(model_cfg, size)
        if postprocessor is not None and postprocessor.in_dims != model_cfg.dims:
            raise ValueError(
                f"post-processor {postprocessor.spec!r} expects {postprocessor.in_dims}-d input, "
                f"the model gives {model_cfg.dims}-d"
            )
        self.postprocessor = postprocessor
        self.artifact_hash = artifact_hash

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        postprocess: str | Path | None = None,
        size: int | None = None,
    ) -> DescriptorPipeline:
        """The model of a fisc training checkpoint; ``postprocess``: ``None`` (raw
        descriptors), ``"run"`` (the run's fitted post-processor beside the checkpoint, which
        must have been fitted on this very checkpoint) or the path of a fitted ``.npz``."""
        from fisc.models.checkpoint import load_checkpoint_model

        model, cfg = load_checkpoint_model(checkpoint)
        pp = None
        if postprocess is not None:
            path = run_postprocess_path(checkpoint) if postprocess == "run" else Path(postprocess)
            if not path.is_file():
                raise FileNotFoundError(
                    f"no fitted post-processor at {path}"
                    + (
                        f": fit one with `fisc fit-postprocess --checkpoint {checkpoint} "
                        "--train-images DIR`"
                        if postprocess == "run"
                        else ""
                    )
                )
            pp = load_fitted_postprocessor(path, checkpoint)
        return cls(model, cfg, pp, size=size)

    @classmethod
    def from_artifact(
        cls,
        root: str | Path,
        verify: bool = True,
        tolerance: float | None = None,
        device: str | torch.device = "cpu",
    ) -> DescriptorPipeline:
        """A frozen artifact's pipeline (model, preprocessing and post-processor from its
        model card), after verifying its manifest and golden descriptors on ``device``
        (``tolerance`` None: bit-identical on CPU, the GPU golden tolerance elsewhere)."""
        from fisc.export.golden import check_golden, golden_tolerance
        from fisc.export.read import read_artifact

        if tolerance is None:
            tolerance = golden_tolerance(device)
        parts = read_artifact(root, verify=verify)
        pipeline = cls(parts.model, parts.model_cfg, parts.postprocessor)
        pipeline.artifact_hash = parts.artifact_hash
        if verify:
            check_golden(pipeline, Path(root), tolerance, device)
        pipeline.to(device).model.eval()
        return pipeline

    @property
    def device(self) -> torch.device:
        """Where the model is: extraction runs there unless it is given ``device=``."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> DescriptorPipeline:
        """Move the model to ``device`` (where extraction then runs by default); returns
        ``self``."""
        self.model.to(device)
        return self

    def with_postprocessor(self, postprocessor: PostProcessor | None) -> DescriptorPipeline:
        """The same model and preprocessing with another (or no) post-processor."""
        return DescriptorPipeline(
            self.model, self.model_cfg, postprocessor, self.preprocess.size, self.artifact_hash
        )

    # --- what it produces ----------------------------------------------------------------
    @property
    def dims(self) -> int:
        """Dimensions of the final descriptors."""
        if self.postprocessor is not None:
            return int(self.postprocessor.dims)
        return self.model_cfg.dims

    @property
    def max_dims(self) -> int:
        """The dims limit the final descriptors are checked against (256 unless a spec's
        ``maxdim`` says otherwise)."""
        from fisc.challenge import MAX_DIMS

        return self.postprocessor.max_dims if self.postprocessor is not None else MAX_DIMS

    @property
    def postprocess_spec(self) -> str | None:
        return self.postprocessor.spec if self.postprocessor is not None else None

    def raw(self, images: ImageSet, **extract) -> tuple[Descriptors, list[str]]:
        """Model descriptors before post-processing, and the ids skipped as undecodable
        (``on_error="skip"``)."""
        extract.setdefault("progress", False)
        extract.setdefault("device", self.device)
        return extract_descriptors(self.model, images, self.preprocess, **extract)

    def finalize(self, raw: Descriptors, role: str) -> Descriptors:
        """Raw descriptors -> final descriptors in ``role`` ('query' or 'reference')."""
        _check_role(role)
        if self.postprocessor is None:
            return raw
        return self.postprocessor.transform(raw, role=role)

    def describe(self, images: ImageSet, role: str, **extract) -> tuple[Descriptors, list[str]]:
        """Final descriptors of ``images`` in ``role``, and the skipped ids."""
        _check_role(role)
        raw, skipped = self.raw(images, **extract)
        return self.finalize(raw, role), skipped

    def queries(self, images: ImageSet, **extract) -> Descriptors:
        """Final query descriptors (an undecodable image is an error)."""
        return self._strict(images, "query", extract)

    def references(self, images: ImageSet, **extract) -> Descriptors:
        """Final reference descriptors (an undecodable image is an error)."""
        return self._strict(images, "reference", extract)

    def _strict(self, images: ImageSet, role: str, extract: dict) -> Descriptors:
        if extract.get("on_error", "raise") != "raise":
            raise ValueError("queries()/references() stop on bad images; use describe() to skip")
        return self.describe(images, role, **extract)[0]

    def tensor(self, path: str | Path, height: int | None = None, width: int | None = None):
        """The model input of one image file (at the pipeline's size, or ``height x width``)."""
        from fisc.data.decode import load_rgb

        img = load_rgb(path)
        if height is None and width is None:
            return self.preprocess(img)
        return self.preprocess.at(img, height or width, width or height)

    def fit_postprocessor(
        self, train_images: ImageSet, spec: str, fit_info: dict | None = None, **extract
    ) -> PostProcessor:
        """Fit ``spec`` on this model's raw descriptors of ``train_images`` (one image per
        forward pass, so the fit does not depend on batching)."""
        from fisc.postprocess.spec import PostProcessor

        pp = PostProcessor(spec)
        pp._check_dims(self.model_cfg.dims)  # a bad spec fails before the extraction
        extract.setdefault("per_image", True)
        train, skipped = self.raw(train_images, desc="training descriptors", **extract)
        if skipped:
            log.warning("post-processing fitted without %d undecodable images", len(skipped))
        return pp.fit(train, **(fit_info or {}))

    def __repr__(self) -> str:
        return (
            f"DescriptorPipeline({self.model_cfg.name}, {self.preprocess}, "
            f"postprocess={self.postprocess_spec!r})"
        )


# --- where a pipeline comes from ---------------------------------------------------------


def source_kind(path: str | Path) -> str:
    """``"artifact"`` for a frozen artifact folder (``fisc freeze``), ``"checkpoint"`` for
    anything else, whose loading then says what is wrong with it (a missing file, a run
    folder, a file that is not a fisc training checkpoint). A TorchScript/ONNX export folder
    and an artifact's weights file alone are refused here, with what to load instead."""
    from fisc.export.artifact import CARD_FILE, MANIFEST_FILE, MODEL_FILE

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist (give a fisc training checkpoint .ckpt or a frozen "
            "artifact folder)"
        )
    if path.is_dir():
        if (path / "runtime.json").is_file():
            raise ValueError(
                f"{path} is a TorchScript/ONNX export (fisc export-runtime): load the artifact "
                "it was exported from, or the export with "
                "fisc.export.runtime.load_runtime_pipeline"
            )
        if (path / MANIFEST_FILE).is_file() or (path / CARD_FILE).is_file():
            return "artifact"
    elif path.suffix == ".safetensors":
        where = path.parent
        hint = (
            f"load the artifact folder that holds it ({where})"
            if path.name == MODEL_FILE and (where / CARD_FILE).is_file()
            else "give a fisc training checkpoint .ckpt or a frozen artifact folder"
        )
        raise ValueError(
            f"{path} holds model weights only (no preprocessing, post-processor or golden "
            f"check): {hint}"
        )
    return "checkpoint"


def load_pipeline(
    checkpoint: str | Path | None = None,
    artifact: str | Path | None = None,
    postprocess: str | Path | None = None,
    size: int | None = None,
    device: str | torch.device = "cpu",
) -> DescriptorPipeline:
    """The pipeline of a training checkpoint (raw descriptors, or with ``postprocess``:
    ``"run"`` or a fitted ``.npz``; ``size`` overrides the eval size) or of a frozen artifact
    (verified on ``device``; its preprocessing and post-processor are its own), with its
    model on ``device``. What ``fisc extract --checkpoint/--artifact`` and ``fisc.load``
    run."""
    if (checkpoint is None) == (artifact is None):
        raise ValueError("give one of a checkpoint or an artifact")
    if artifact is not None:
        if postprocess or size:
            raise ValueError(
                "an artifact is frozen: its preprocessing and post-processor are its own "
                "(no size, no postprocess)"
            )
        return DescriptorPipeline.from_artifact(artifact, device=device)
    if postprocess and size:
        raise ValueError(
            "size changes the descriptors a fitted post-processor was fitted on: give "
            "postprocess or size, not both"
        )
    pipeline = DescriptorPipeline.from_checkpoint(checkpoint, postprocess=postprocess, size=size)
    return pipeline.to(device)


# --- the run's fitted post-processor ------------------------------------------------------


def run_postprocess_path(checkpoint: str | Path) -> Path:
    """Where a run keeps the post-processor fitted for ``checkpoint``: beside it, named after
    it (``checkpoints/last.ckpt`` -> ``checkpoints/last.postprocess.npz``), so each checkpoint
    of a run can have its own."""
    path = Path(checkpoint)
    return path.with_name(path.stem + RUN_POSTPROCESS_SUFFIX)


def run_postprocess_spec(checkpoint: str | Path) -> str | None:
    """The ``postprocess`` spec of the recipe that wrote ``checkpoint`` (from the run's
    ``config.yaml``, one folder above ``checkpoints/``), or ``None``."""
    config = Path(checkpoint).resolve().parent.parent / RUN_CONFIG_FILE
    if not config.is_file():
        return None
    import yaml

    saved = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    spec = saved.get("postprocess") if isinstance(saved, dict) else None
    return str(spec) if spec else None


def load_fitted_postprocessor(path: str | Path, checkpoint: str | Path | None = None):
    """A fitted post-processor; with ``checkpoint``, refused if it was recorded as fitted on
    another checkpoint (its descriptors would not be the ones it was fitted for)."""
    from fisc.postprocess.spec import PostProcessor

    pp = PostProcessor.load(path)
    fitted_on = (pp.fit_set or {}).get("checkpoint_sha256")
    if checkpoint is not None and fitted_on is not None and fitted_on != sha256_of(checkpoint):
        raise ValueError(
            f"post-processor {path} was fitted on another checkpoint (sha256 {fitted_on[:12]}...) "
            f"than {checkpoint}: refit it with `fisc fit-postprocess --checkpoint {checkpoint} "
            "--train-images DIR`"
        )
    return pp


def fit_run_postprocessor(
    checkpoint: str | Path,
    train_images: ImageSet,
    spec: str | None = None,
    out: str | Path | None = None,
    **extract,
) -> tuple[Path, PostProcessor]:
    """Fit ``spec`` (default: the run's recipe spec) on the checkpoint's descriptors of
    ``train_images`` and save it (default: beside the checkpoint, where ``fisc freeze`` and
    ``DescriptorPipeline.from_checkpoint(postprocess="run")`` find it). The file records the
    spec, the fit set (count, ids hash, folder) and the checkpoint's sha256."""
    from fisc.files import write_json

    spec = spec or run_postprocess_spec(checkpoint)
    if not spec:
        raise ValueError(
            f"the run of {checkpoint} has no postprocess spec in its config.yaml: give one "
            "(--spec, e.g. 'pca_whiten128,l2')"
        )
    pipeline = DescriptorPipeline.from_checkpoint(checkpoint)
    folder = str(Path(train_images.paths[0]).parent) if len(train_images) else None
    info = {"checkpoint_sha256": sha256_of(checkpoint), "images": folder}
    pp = pipeline.fit_postprocessor(train_images, spec, fit_info=info, **extract)
    path = Path(out) if out is not None else run_postprocess_path(checkpoint)
    pp.save(path)
    summary = {"file": path.name, "spec": pp.spec, "dims": pp.dims, "fit_set": pp.fit_set}
    write_json(path.with_suffix(".json"), summary, sort_keys=True)  # last.postprocess.json
    log.info("post-processor %r fitted on %d training images: %s", spec, pp.fit_set["count"], path)
    return path, pp


def subset(d: Descriptors, ids) -> Descriptors:
    """The rows of ``d`` whose ids are in ``ids`` (order kept)."""
    keep = np.isin(d.ids, list(ids))
    return Descriptors(d.ids[keep], d.vectors[keep])
