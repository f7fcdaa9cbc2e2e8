"""TorchScript and ONNX runtimes of a frozen artifact, with a dynamic batch axis.

``export_runtimes(artifact, out_dir)`` writes, in a temporary sibling folder renamed into place
when complete:

- ``descriptor.torchscript.pt``: the traced descriptor model inside a scripted wrapper that
  checks the input shape (``(B, 3, S, S)`` for a fixed-resolution export);
- ``descriptor.onnx``: the same model through ``torch.onnx.export(dynamo=True)``; input
  ``images`` ``(batch, 3, S, S)``, output ``descriptors`` ``(batch, dims)``;
- ``postprocess.npz``: the artifact's fitted post-processor, when it has one. The graphs stop
  at the model's output; the post-processing is applied after them by fisc's
  :class:`~fisc.postprocess.spec.PostProcessor` (numpy, float64) from these parameters, per
  role (:func:`load_runtime_pipeline`). That pair is what is checked: final descriptors of
  each role against the eager :class:`~fisc.inference.DescriptorPipeline`;
- ``runtime.json``: the artifact hash, the input spec, the post-processing spec, and the
  largest difference from the eager pipeline measured for each format at each batch size,
  resolution and role checked;
- ``MANIFEST.sha256``, as in an artifact.

Every export is checked against the eager model on the artifact's probe images at several
batch sizes (and resolutions, when the export is of dynamic resolution); a difference above
the tolerance fails the export. Dynamic resolution is refused for backbones whose padding is
computed from the input size ("same" padding of TF-ported weights) or whose patch embedding
requires one image size. (With torch 2.14's tracer and dynamo exporter the "same" padding of
timm's Conv2dSame stays symbolic, checked by hand; but timm's Conv2dSameExport freezes it at
the first size seen, and so can shape-folding optimisers downstream, so fisc refuses rather than
rely on the exporter.)
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fisc.data.disc21 import list_images
from fisc.export.artifact import POSTPROCESS_FILE, PROBE_DIR
from fisc.export.load import load_artifact
from fisc.export.manifest import manifested_dir, verify_manifest
from fisc.inference import ROLES, DescriptorPipeline
from fisc.models.descriptor import DescriptorModel

FORMATS = {"torchscript": "descriptor.torchscript.pt", "onnx": "descriptor.onnx"}
RUNTIME_CARD = "runtime.json"
RUNTIME_FORMAT = "fisc-runtime/1"
DEFAULT_TOLERANCE = 1e-5  # max abs difference from eager on unit-norm descriptors
BATCH_SIZES = (1, 3, 8)
ONNX_OPSET = 18


class RuntimeExportError(ValueError):
    """An export that cannot be made, or that does not reproduce the eager model."""


# --- what a backbone allows -----------------------------------------------------------------


def size_dependent_padding(model: nn.Module) -> list[str]:
    """Modules whose padding is computed from the input size at run time (timm's ``*Same``
    convolutions and pools, ``same_pad``/``dynamic_padding`` layers), as ``"path (Class)"``."""
    found = []
    for name, m in model.named_modules():
        cls = type(m).__name__
        if (
            cls.endswith(("Same", "SameExport"))
            or getattr(m, "same_pad", False) is True
            or getattr(m, "dynamic_padding", False) is True
        ):
            found.append(f"{name} ({cls})")
    return found


def fixed_size_modules(model: nn.Module) -> list[str]:
    """Modules that accept one input size only (a ViT patch embedding with a strict size)."""
    return [
        f"{name} ({type(m).__name__}, img_size {tuple(getattr(m, 'img_size', ()) or ())})"
        for name, m in model.named_modules()
        if getattr(m, "strict_img_size", False) is True
    ]


def check_dynamic_resolution(model: nn.Module, name: str) -> None:
    """Raise :class:`RuntimeExportError` if ``model`` cannot be exported with dynamic H, W."""
    padded = size_dependent_padding(model)
    if padded:
        raise RuntimeExportError(
            f"{name} computes its padding from the input size ('same' padding) in "
            f"{len(padded)} modules, e.g. {', '.join(padded[:3])}: whether an exported graph keeps "
            "that computation depends on the exporter and on later graph optimisers (timm's "
            "Conv2dSameExport fixes it at the first size seen), so dynamic resolution is "
            "refused. Export at the "
            "model card's fixed resolution (the default), or train a backbone with static "
            "padding (e.g. efficientnet_lite0 rather than tf_efficientnet_lite0)."
        )
    fixed = fixed_size_modules(model)
    if fixed:
        raise RuntimeExportError(
            f"{name} accepts one input size only ({', '.join(fixed[:2])}): dynamic resolution "
            "is refused. Export at the fixed resolution, or train with "
            "model.model_kwargs.dynamic_img_size=true."
        )


# --- export ----------------------------------------------------------------------------------


class _ShapeChecked(nn.Module):
    """Scripted wrapper of a traced model: rejects inputs the trace is not valid for."""

    def __init__(self, inner: nn.Module, size: int, dynamic_resolution: bool):
        super().__init__()
        self.inner = inner
        self.size = size
        self.dynamic_resolution = dynamic_resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {images.shape}")
        if not self.dynamic_resolution and (
            images.size(2) != self.size or images.size(3) != self.size
        ):
            raise ValueError(
                f"this export takes {self.size}x{self.size} images, got {images.shape}"
            )
        return self.inner(images)


def export_torchscript(
    model: DescriptorModel, size: int, path: Path, dynamic_resolution: bool = False
) -> None:
    """The model traced at ``size x size`` inside a scripted input-shape check."""
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation and tracer notices
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        scripted = torch.jit.script(_ShapeChecked(traced, size, dynamic_resolution))
        scripted.save(str(path))


def export_onnx(
    model: DescriptorModel, size: int, path: Path, dynamic_resolution: bool = False
) -> None:
    """The model through torch's dynamo ONNX exporter, dynamic batch (and H, W) axes."""
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as e:
        raise RuntimeExportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[onnx]'"
        ) from e
    from torch.export import Dim

    axes: dict[int, Dim] = {0: Dim("batch", min=1, max=65536)}
    if dynamic_resolution:
        axes[2] = Dim("height", min=32, max=4096)
        axes[3] = Dim("width", min=32, max=4096)
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), _quiet("onnx_ir", "onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["images"],
            output_names=["descriptors"],
            dynamic_shapes=(axes,),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise these loggers to WARNING for the block (the ONNX passes log every rewrite)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


_EXPORTERS = {"torchscript": export_torchscript, "onnx": export_onnx}


# --- load and run ----------------------------------------------------------------------------


def load_runtime(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``float32 (B, 3, H, W) -> float32 (B, dims)`` from an exported file,
    picked by its suffix (``.pt``: TorchScript on CPU, ``.onnx``: onnxruntime)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"runtime file {path} does not exist")
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(images: np.ndarray) -> np.ndarray:
            return session.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]

        return run_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run_torchscript(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(images, np.float32))).numpy()

    return run_torchscript


class RuntimePipeline:
    """An exported graph plus the artifact's fitted post-processor: preprocessed image batch
    ``float32 (B, 3, H, W)`` -> final descriptors of a role."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], postprocessor=None):
        self.run = run
        self.postprocessor = postprocessor

    def __call__(self, images: np.ndarray, role: str) -> np.ndarray:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        out = np.asarray(self.run(images), dtype=np.float32)
        if self.postprocessor is None:
            return out
        return self.postprocessor.transform_array(out, role=role)


def load_runtime_pipeline(out_dir: str | Path, fmt: str = "onnx") -> RuntimePipeline:
    """The runtime of ``out_dir`` in ``fmt`` with its post-processor (manifest verified)."""
    out_dir = Path(out_dir)
    verify_manifest(out_dir)
    if fmt not in FORMATS:
        raise RuntimeExportError(f"unknown runtime format {fmt!r} (choose from {list(FORMATS)})")
    pp = None
    if (out_dir / POSTPROCESS_FILE).is_file():
        from fisc.postprocess.spec import PostProcessor

        pp = PostProcessor.load(out_dir / POSTPROCESS_FILE)
    return RuntimePipeline(load_runtime(out_dir / FORMATS[fmt]), pp)


def probe_batch(pipeline: DescriptorPipeline, folder: Path, height: int, width: int) -> np.ndarray:
    """The probe images of an artifact as the pipeline preprocesses them, at ``height x width``."""
    images = list_images(folder)
    return np.stack([pipeline.tensor(p, height, width).numpy() for p in images.paths])


def check_runtime(
    run: Callable[[np.ndarray], np.ndarray],
    model: DescriptorModel,
    inputs: dict[tuple[int, int], np.ndarray],
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[dict]:
    """Max abs difference between ``run`` and the eager model, per (resolution, batch size):
    the first ``b`` images of each input batch, eager run one image at a time."""
    rows = []
    with torch.inference_mode():
        for (h, w), batch in inputs.items():
            eager = torch.cat([model(torch.from_numpy(x[None])) for x in batch]).numpy()
            for b in batch_sizes:
                b = min(b, len(batch))
                rows.append(
                    _compare(run(batch[:b]), eager[:b], {"height": h, "width": w, "batch": b})
                )
    return rows


def check_runtime_roles(
    runtime: RuntimePipeline,
    pipeline: DescriptorPipeline,
    probe: Path,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[dict]:
    """Max abs difference between the runtime's final descriptors and the eager pipeline's
    (``pipeline.describe``, one image per pass) on the probe images, per role and batch size,
    at the pipeline's resolution."""
    images = list_images(probe)
    size = pipeline.preprocess.size
    batch = probe_batch(pipeline, probe, size, size)
    raw, _ = pipeline.raw(images, per_image=True)  # one extraction, finalized per role
    rows = []
    for role in ROLES:
        eager = pipeline.finalize(raw, role)
        for b in batch_sizes:
            b = min(b, len(batch))
            where = {"role": role, "height": size, "width": size, "batch": b}
            rows.append(_compare(runtime(batch[:b], role), eager.vectors[:b], where))
    return rows


def _compare(out: np.ndarray, eager: np.ndarray, where: dict) -> dict:
    if out.shape != eager.shape:
        raise RuntimeExportError(f"output shape {out.shape} at {where}; eager gives {eager.shape}")
    return {**where, "max_abs_diff": float(np.max(np.abs(out.astype(np.float64) - eager)))}


def check_resolutions(size: int, dynamic_resolution: bool) -> list[tuple[int, int]]:
    """The resolutions an export is checked at: the card's size, and with dynamic resolution
    a smaller, a larger and a non-square one (multiples of 32)."""
    if not dynamic_resolution:
        return [(size, size)]
    small = max(32, (size * 3 // 4) // 32 * 32)
    large = (size * 5 // 4 + 31) // 32 * 32
    return list(dict.fromkeys([(size, size), (small, small), (large, large), (small, large)]))


def export_runtimes(
    artifact: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = tuple(FORMATS),
    dynamic_resolution: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict:
    """Export the artifact's model in ``formats`` to ``out_dir`` (which must not exist),
    check each export against the eager model, and return the runtime card."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise RuntimeExportError(f"unknown runtime formats {unknown} (choose from {list(FORMATS)})")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"runtime directory {out_dir} already exists; refusing to overwrite")
    pipeline = load_artifact(artifact)
    model, cfg, size = pipeline.model, pipeline.model_cfg, pipeline.preprocess.size
    if dynamic_resolution:
        check_dynamic_resolution(model, cfg.name)
    resolutions = check_resolutions(size, dynamic_resolution)
    probe = Path(artifact) / PROBE_DIR
    inputs = {(h, w): probe_batch(pipeline, probe, h, w) for h, w in resolutions}

    with manifested_dir(out_dir) as tmp:
        pp = pipeline.postprocessor
        if pp is not None:
            shutil.copyfile(Path(artifact) / POSTPROCESS_FILE, tmp / POSTPROCESS_FILE)
        checks = {}
        for fmt in formats:
            path = tmp / FORMATS[fmt]
            _EXPORTERS[fmt](model, size, path, dynamic_resolution)
            run = load_runtime(path)
            rows = check_runtime(run, model, inputs, batch_sizes)
            rows += check_runtime_roles(RuntimePipeline(run, pp), pipeline, probe, batch_sizes)
            worst = max(r["max_abs_diff"] for r in rows)
            if not worst <= tolerance:
                bad = [r for r in rows if not r["max_abs_diff"] <= tolerance]
                raise RuntimeExportError(
                    f"{fmt} export differs from the eager model by {worst:.3g} > tolerance "
                    f"{tolerance:g} at {len(bad)} of {len(rows)} checks, e.g. {bad[0]}"
                )
            checks[fmt] = {"file": FORMATS[fmt], "max_abs_diff": worst, "checks": rows}
        shape_size = None if dynamic_resolution else size
        card = {
            "format": RUNTIME_FORMAT,
            "artifact": str(artifact),
            "artifact_hash": pipeline.artifact_hash,
            "model": cfg.name,
            "input": {
                "name": "images",
                "shape": ["batch", 3, shape_size or "height", shape_size or "width"],
                "dtype": "float32",
                "preprocess": {
                    "steps": "RGB, resize, (x/255 - mean) / std",
                    **pipeline.preprocess.card(),
                },
            },
            "output": {"name": "descriptors", "shape": ["batch", cfg.dims], "dtype": "float32"},
            "postprocess": None
            if pp is None
            else {
                "file": POSTPROCESS_FILE,
                "spec": pp.spec,
                "dims": pp.dims,
                "applied": "after the graph, by fisc.postprocess.PostProcessor per role "
                "(fisc.export.runtime.load_runtime_pipeline)",
            },
            "dynamic_resolution": dynamic_resolution,
            "tolerance": tolerance,
            "checked_on": "cpu, eager run one image at a time, artifact probe images; model "
            "output at every resolution and batch, final descriptors per role at the card's size",
            "exports": checks,
            "torch_version": torch.__version__,
        }
        (tmp / RUNTIME_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def read_runtime_card(out_dir: str | Path, artifact_hash: str | None = None) -> dict:
    """The runtime card of ``out_dir`` after checking its manifest and, if given, that it was
    exported from the artifact with hash ``artifact_hash``."""
    out_dir = Path(out_dir)
    verify_manifest(out_dir)
    card = json.loads((out_dir / RUNTIME_CARD).read_text(encoding="utf-8"))
    if artifact_hash is not None and card.get("artifact_hash") != artifact_hash:
        raise RuntimeExportError(
            f"{out_dir} was exported from artifact {card.get('artifact_hash')}, not {artifact_hash}"
        )
    return card
