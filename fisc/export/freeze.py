"""Frozen descriptor artifacts: a training checkpoint as a self-describing, verifiable folder.

An artifact directory holds

- ``model.safetensors``: the DescriptorModel state dict (backbone + pooling + head) only;
  its metadata (:func:`weights_metadata`) names the timm model, the head, the input and the
  post-processing, so the file says what it is without fisc, and loading checks it against
  the model card;
- ``model_card.json``: what is needed to rebuild the model and its input preprocessing
  (timm name and version, ModelConfig, resize policy, mean/std, dims, pooling), the
  post-processor if any, the training config the checkpoint carries, git SHA, torch version;
- ``probe/``: a fixed probe set of images (by default 8 synthetic PNGs from a seeded rng);
- ``golden.h5``: the model's descriptors of the probe images (before post-processing);
- ``golden_query.h5``, ``golden_reference.h5``: with a post-processor, the final descriptors
  of the probe images in each role (what the pipeline ships);
- ``postprocess.npz``: the fitted post-processor, when one is frozen with the model (by
  default the run's, ``<checkpoint>.postprocess.npz`` beside the checkpoint, fitted at the
  end of training or by ``fisc fit-postprocess``);
- ``MANIFEST.sha256``: ``sha256  relative/path`` for every other file, sorted by path.

The artifact hash is the sha256 of the manifest file. :func:`load_artifact` verifies the
manifest, rebuilds the pipeline (model, preprocessing, post-processor) from the card, loads the
weights strictly and recomputes the golden descriptors; any failed check raises
:class:`ArtifactError` naming the file and check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image

from fisc.checkpoints import load_checkpoint
from fisc.data.disc21 import ImageSet, list_images
from fisc.descriptors.h5io import Descriptors, read_vectors, write_vectors
from fisc.inference import (
    DescriptorPipeline,
    load_fitted_postprocessor,
    run_postprocess_path,
    run_postprocess_spec,
)
from fisc.models.descriptor import DescriptorModel, ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig, sha256_of

FORMAT = "fisc-artifact/1"
MODEL_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
GOLDEN_FILE = "golden.h5"
PROBE_DIR = "probe"
POSTPROCESS_FILE = "postprocess.npz"
MANIFEST_FILE = "MANIFEST.sha256"
GOLDEN_FINAL_FILES = {"query": "golden_query.h5", "reference": "golden_reference.h5"}
N_PROBE = 8
PROBE_SEED = 20210601
GOLDEN_BATCH_SIZE = 8


# Golden descriptors are computed on CPU when freezing; on another device they differ by
# kernel rounding. This bound has not been measured on a GPU yet (benchmarks/gpu_check_export.sh
# measures it); it is far below the distances that decide a match (~0.1 on unit vectors).
GPU_GOLDEN_TOLERANCE = 1e-4


def golden_tolerance(device: str | torch.device) -> float:
    """The default golden-check tolerance on ``device``: 0 (bit-identical) on CPU."""
    return 0.0 if torch.device(device).type == "cpu" else GPU_GOLDEN_TOLERANCE


class ArtifactError(RuntimeError):
    """An artifact that is incomplete, tampered with, or does not reproduce its golden output."""


# --- probe images -------------------------------------------------------------------------


def synthetic_probe_images(folder: Path, n: int = N_PROBE, seed: int = PROBE_SEED) -> ImageSet:
    """Write ``n`` deterministic synthetic RGB images (PNG) to ``folder``: gradients,
    rectangles and noise of varied sizes and aspect ratios, from a seeded numpy rng."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(48, 160, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.empty((h, w, 3), dtype=np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-1, 1, size=3)
            img[..., c] = 127.5 + 100 * np.sin(a * xx / 9 + b * yy / 7 + 3 * phase)
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            y1, x1 = y0 + int(rng.integers(4, h - y0)), x0 + int(rng.integers(4, w - x0))
            img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 12, size=img.shape)
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"probe_{i:02d}.png")
    return list_images(folder)


def _copy_probe(images: ImageSet, folder: Path) -> ImageSet:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, path in zip(images.ids, images.paths, strict=True):
        if "/" in image_id or "\\" in image_id:
            raise ValueError(f"probe image ids must be plain file names, got {image_id!r}")
        shutil.copyfile(path, folder / f"{image_id}{Path(path).suffix.lower()}")
    return list_images(folder)


# --- manifest -----------------------------------------------------------------------------


def _artifact_files(root: Path) -> list[str]:
    """Every file under ``root`` except the manifest, as sorted posix relative paths."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_FILE
    )


def write_manifest(root: Path) -> str:
    """Write ``MANIFEST.sha256`` for every file under ``root``; return the artifact hash."""
    lines = [f"{sha256_of(root / rel)}  {rel}\n" for rel in _artifact_files(root)]
    (root / MANIFEST_FILE).write_text("".join(lines), encoding="ascii")
    return sha256_of(root / MANIFEST_FILE)


def artifact_hash(root: str | Path) -> str:
    """The artifact's hash: the sha256 of its manifest file (not verified: see verify_manifest)."""
    manifest = Path(root) / MANIFEST_FILE
    if not manifest.is_file():
        raise ArtifactError(f"{manifest}: missing (manifest check)")
    return sha256_of(manifest)


def verify_manifest(root: str | Path) -> str:
    """Check every file against the manifest (present, same sha256, none unlisted);
    return the artifact hash."""
    root = Path(root)
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise ArtifactError(f"{MANIFEST_FILE}: missing from artifact {root} (manifest check)")
    listed: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text(encoding="ascii").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel:
            raise ArtifactError(f"{MANIFEST_FILE}:{n}: malformed line {line!r} (manifest check)")
        listed[rel] = digest
    problems = []
    for rel, digest in listed.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing (manifest check)")
        elif sha256_of(path) != digest:
            problems.append(f"{rel}: sha256 differs from the manifest (tampered; manifest check)")
    for rel in _artifact_files(root):
        if rel not in listed:
            problems.append(f"{rel}: not listed in the manifest (manifest check)")
    if problems:
        raise ArtifactError(f"artifact {root} failed verification: " + "; ".join(problems))
    return sha256_of(manifest)


@contextmanager
def manifested_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out_dir`` to fill; on success write its
    ``MANIFEST.sha256``, make it read-only-friendly (0644/0755) and rename it to ``out_dir``
    (which must not exist); on any error remove it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        write_manifest(tmp)
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        if out_dir.exists():
            raise FileExistsError(f"{out_dir} appeared while it was being written")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- freeze -------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _state_dict(model: DescriptorModel) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: give every tensor its own contiguous copy
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _golden(pipeline: DescriptorPipeline, probe: ImageSet, device="cpu") -> dict[str, Descriptors]:
    """The probe descriptors an artifact is checked against: the model's output
    (``golden.h5``) and, with a post-processor, the final descriptors of each role."""
    kw = dict(batch_size=GOLDEN_BATCH_SIZE, device=device, desc="golden", per_image=True)
    raw, skipped = pipeline.raw(probe, **kw)  # per image: bit-identical whatever the batching
    if skipped:
        raise ArtifactError(f"probe images could not be decoded: {skipped}")
    out = {GOLDEN_FILE: raw}
    if pipeline.postprocessor is not None:
        for role, name in GOLDEN_FINAL_FILES.items():
            out[name] = pipeline.finalize(raw, role)
    return out


def _head(model: DescriptorModel, cfg: ModelConfig) -> str:
    """The head in words, e.g. ``gem(p=3.0) -> linear(1280->256) -> l2``."""
    pool = {
        "gem": f"gem(p={cfg.gem_p}{', learnable' if cfg.gem_learnable else ''})",
        "avg": "avg",
        "cls": "cls token",
        "mean_tokens": "mean of tokens",
    }.get(cfg.pooling, cfg.pooling)
    linear = f"linear({model.projection.in_features}->{model.projection.out_features})"
    return " -> ".join([pool, linear, *(["batchnorm"] if cfg.projection_bn else []), "l2"])


def _model_config_json(cfg: ModelConfig) -> str:
    """The ModelConfig, weights source aside (the weights are the file's), as sorted JSON."""
    model = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "weights"}
    return json.dumps(_jsonable(model), sort_keys=True)


def weights_metadata(
    model: DescriptorModel, cfg: ModelConfig, postprocess: str | None
) -> dict[str, str]:
    """The safetensors metadata of an artifact's ``model.safetensors`` (strings only): what
    the weights are, readable by any safetensors reader (``safe_open(f).metadata()``).

    ``timm.model`` / ``timm.version`` / ``timm.model_kwargs``: the backbone;
    ``descriptor.head``: pooling -> projection -> normalisation; ``descriptor.dims`` and
    ``descriptor.pooling``; ``input``: the preprocessing (JSON); ``fisc.postprocess``: the
    spec the artifact applies after the model (``postprocess.npz``; ``none``: none);
    ``fisc.model_config``: the full ModelConfig (JSON), which :func:`load_artifact` checks
    against the model card."""
    from fisc.inference import resolve_preprocess

    return {
        "format": "pt",
        "fisc.format": FORMAT,
        "fisc.model_config": _model_config_json(cfg),
        "fisc.postprocess": postprocess or "none",
        "timm.model": cfg.name,
        "timm.version": timm.__version__,
        "timm.model_kwargs": json.dumps(_jsonable(cfg.model_kwargs), sort_keys=True),
        "descriptor.head": _head(model, cfg),
        "descriptor.dims": str(cfg.dims),
        "descriptor.pooling": cfg.pooling,
        "input": json.dumps(resolve_preprocess(cfg).card(), sort_keys=True),
    }


def _check_weights_metadata(weights: Path, cfg: ModelConfig, postprocess: str | None) -> None:
    """Weights whose metadata names another model or post-processing than the model card
    are refused; files without fisc metadata (frozen before it was written) pass."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    saved = meta.get("fisc.model_config")
    try:
        saved = json.loads(saved) if saved is not None else None
    except ValueError as e:
        raise ArtifactError(f"{weights.name}: metadata fisc.model_config is not JSON ({e})") from e
    if saved is not None and saved != json.loads(_model_config_json(cfg)):
        raise ArtifactError(
            f"{weights.name}: its metadata describes another model ({meta.get('timm.model')}, "
            f"{meta.get('descriptor.dims')}-d, {meta.get('descriptor.pooling')}) than the model "
            f"card ({cfg.name}, {cfg.dims}-d, {cfg.pooling}) (metadata check)"
        )
    saved_pp = meta.get("fisc.postprocess")
    if saved_pp is not None and saved_pp != (postprocess or "none"):
        raise ArtifactError(
            f"{weights.name}: its metadata says post-processing {saved_pp!r}, the model card "
            f"{postprocess or 'none'!r} (metadata check)"
        )


def _git_sha() -> str | None:
    from fisc.train.run import git_sha

    return git_sha()


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
            "git_sha": _git_sha(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        }
        (tmp / CARD_FILE).write_text(
            json.dumps(_jsonable(card), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return out_dir


# --- load ---------------------------------------------------------------------------------


def _rebuild(cfg: ModelConfig, weights: Path, postprocess: str | None = None) -> DescriptorModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        _check_weights_metadata(weights, cfg, postprocess)
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{weights.name}: unreadable safetensors file ({e})") from e
    model = build_descriptor_model(dataclasses.replace(cfg, weights=WeightsConfig(source="none")))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{weights.name}: weights do not fit the model card ({e})") from e
    return model.eval()


def _pipeline(cfg: ModelConfig, root: Path, pp_card: dict | None) -> DescriptorPipeline:
    """The pipeline of an artifact folder's own files: weights, and post-processor if any."""
    pp = None
    if pp_card:
        from fisc.postprocess.spec import PostProcessor

        path = root / pp_card["file"]
        try:
            pp = PostProcessor.load(path)
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{pp_card['file']}: unreadable post-processor ({e})") from e
        if pp.spec != pp_card["spec"] or pp.dims != pp_card["dims"]:
            raise ArtifactError(
                f"{pp_card['file']}: spec {pp.spec!r} ({pp.dims}-d) differs from the model "
                f"card's {pp_card['spec']!r} ({pp_card['dims']}-d)"
            )
    model = _rebuild(cfg, root / MODEL_FILE, pp_card["spec"] if pp_card else None)
    return DescriptorPipeline(model, cfg, pp)


def read_card(root: str | Path) -> dict:
    path = Path(root) / CARD_FILE
    if not path.is_file():
        raise ArtifactError(f"{CARD_FILE}: missing from artifact {root}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{CARD_FILE}: not valid JSON ({e})") from e
    if card.get("format") != FORMAT:
        raise ArtifactError(f"{CARD_FILE}: format {card.get('format')!r}, expected {FORMAT!r}")
    return card


def card_model_config(card: dict) -> ModelConfig:
    """The ModelConfig of a model card, with weights source ``none`` (they come from the
    artifact's safetensors file)."""
    model = dict(card["model"])
    model.pop("weights", None)
    return ModelConfig(**model, weights=WeightsConfig(source="none"))


def load_postprocessor(root: str | Path):
    """The artifact's fitted post-processor, or ``None`` if it was frozen without one."""
    card = read_card(root)
    if not card.get("postprocess"):
        return None
    from fisc.postprocess.spec import PostProcessor

    return PostProcessor.load(Path(root) / card["postprocess"]["file"])


def check_golden(
    pipeline: DescriptorPipeline,
    root: str | Path,
    tolerance: float = 0.0,
    device: str | torch.device = "cpu",
) -> float:
    """Recompute the probe descriptors (model output and, with a post-processor, the final
    descriptors of each role) and compare them with the golden files; return the largest
    absolute difference. ``tolerance=0`` asks for bit-identical output (CPU)."""
    root = Path(root)
    expected = {GOLDEN_FILE: GOLDEN_FILE}
    if pipeline.postprocessor is not None:
        expected.update({n: n for n in GOLDEN_FINAL_FILES.values()})
    for name in expected:
        if not (root / name).is_file():
            raise ArtifactError(f"{name}: missing from artifact {root} (golden check)")
    probe = list_images(root / PROBE_DIR)
    fresh = _golden(pipeline, probe, device)
    worst = 0.0
    for name in expected:
        worst = max(worst, _compare_golden(fresh[name], read_vectors(root / name), name, tolerance))
    return worst


def _compare_golden(fresh: Descriptors, golden: Descriptors, name: str, tolerance: float) -> float:
    if list(fresh.ids) != list(golden.ids):
        raise ArtifactError(
            f"golden descriptors differ: probe ids {list(fresh.ids)} != {list(golden.ids)} "
            f"in {name} (golden check)"
        )
    if fresh.vectors.shape != golden.vectors.shape:
        raise ArtifactError(
            f"golden descriptors differ: shape {fresh.vectors.shape} vs "
            f"{golden.vectors.shape} in {name} (golden check)"
        )
    diff = float(np.max(np.abs(fresh.vectors.astype(np.float64) - golden.vectors)))
    same = np.array_equal(fresh.vectors, golden.vectors) if tolerance == 0 else diff <= tolerance
    if not same:
        rows = np.flatnonzero(np.abs(fresh.vectors - golden.vectors).max(axis=1) > tolerance)
        raise ArtifactError(
            f"golden descriptors differ from {name}: max abs difference {diff:.3g} > "
            f"tolerance {tolerance:g} for {len(rows)} of {len(golden.ids)} probe images "
            f"(e.g. {[str(golden.ids[i]) for i in rows[:3]]}) (golden check)"
        )
    return diff


def load_artifact(
    root: str | Path,
    verify: bool = True,
    tolerance: float = 0.0,
    device: str | torch.device = "cpu",
) -> DescriptorPipeline:
    """The artifact's :class:`~fisc.inference.DescriptorPipeline` (model in eval mode on
    ``device``, preprocessing, post-processor), its ``artifact_hash`` set.

    With ``verify`` the manifest is checked and the golden descriptors (model output and
    final descriptors of each role) are recomputed on ``device`` (``tolerance`` 0:
    bit-identical, as holds on CPU; allow some on GPU)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist")
    digest = verify_manifest(root) if verify else artifact_hash(root)
    card = read_card(root)
    cfg = card_model_config(card)
    if not (root / MODEL_FILE).is_file():
        raise ArtifactError(f"{MODEL_FILE}: missing from artifact {root}")
    pipeline = _pipeline(cfg, root, card.get("postprocess"))
    pipeline.artifact_hash = digest
    if verify:
        check_golden(pipeline, root, tolerance, device)
    pipeline.to(device).model.eval()
    return pipeline
