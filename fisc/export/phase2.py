"""Phase 1 export (frozen artifact -> reference and Phase 1 query descriptors, submission) and
Phase 2 export (same artifact, Phase 2 queries only, Phase 1 references reused after a check).

The Phase 1 directory is written once and never overwritten. Every HDF5 file in it carries the
artifact hash as an attribute, and ``phase1.json`` records the hash, the sha256 of each file,
the device and the torch version; Phase 2 refuses an artifact whose hash differs, and Phase 1
files whose stamp or sha256 no longer match.

Descriptors are computed one image per forward pass under deterministic kernels (see
:mod:`fisc.determinism`), so on one device they are bit-identical run to run; the
Phase 2 check of recomputed references is bit for bit unless ``reference_tolerance`` is set.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fisc.challenge import read_id_list, validate_submission
from fisc.data.disc21 import Disc21, ImageSet
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import read_attrs, read_vectors, write_submission, write_vectors
from fisc.determinism import deterministic_kernels
from fisc.export.golden import golden_tolerance
from fisc.export.load import load_artifact
from fisc.files import atomic_path
from fisc.inference import DescriptorPipeline
from fisc.provenance import sha256_of


class ExportError(RuntimeError):
    """An export that would break the Phase 1 / Phase 2 rules."""


@dataclass
class ExportConfig:
    checkpoint: str | None
    artifact: str
    data_root: str
    phase1_queries: str
    phase2_queries: str
    phase1_dir: str
    phase2_submission: str
    reference_check_sample: int = 32
    batch_size: int = 64
    num_workers: int = 2
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = True  # deterministic kernels (cuDNN, cuBLAS, no TF32) while exporting
    reference_tolerance: float = 0.0  # 0: recomputed references must be bit-identical
    golden_tolerance: float | None = None  # None: 0 on cpu, GPU_GOLDEN_TOLERANCE elsewhere
    runtime_dir: str | None = None  # TorchScript/ONNX exports of the artifact, made once
    runtime_formats: list[str] = field(default_factory=list)
    dynamic_resolution: bool = False
    postprocess: str | None = "run"  # run: the run's fitted post-processor | null | a .npz


PHASE1_FILES = ("references.h5", "queries.h5", "submission.h5")


def _golden_tolerance(ec: ExportConfig) -> float:
    if ec.golden_tolerance is not None:
        return ec.golden_tolerance
    return golden_tolerance(ec.device)


def _load(ec: ExportConfig):
    return load_artifact(ec.artifact, tolerance=_golden_tolerance(ec), device=ec.device)


def _query_ids(ec: ExportConfig, name: str) -> list[str]:
    ids, _ = read_id_list(Path(ec.data_root) / name, "query")
    return ids


def _describe(
    pipeline: DescriptorPipeline, images: ImageSet, role: str, ec: ExportConfig, desc: str
) -> Descriptors:
    """Final descriptors in ``role``, one image per forward pass (bit-identical however the
    images are batched). An image that does not decode stops the export
    (:class:`fisc.data.decode.ImageDecodeError`, naming the file): a submission describes every
    image."""
    d, _ = pipeline.describe(
        images,
        role,
        batch_size=ec.batch_size,
        num_workers=ec.num_workers,
        device=ec.device,
        desc=desc,
        progress=True,
        per_image=True,
    )
    return d


def recheck_references(
    pipeline: DescriptorPipeline,
    references: ImageSet,
    phase1_refs: Descriptors,
    sample: np.ndarray,
    ec: ExportConfig,
) -> float:
    """Recompute the final descriptors of the references at rows ``sample`` and compare them
    with Phase 1's; return the largest difference. Bit for bit unless ``reference_tolerance``
    is set: a changed model, preprocessing or post-processor fails here."""
    subset = references.subset(phase1_refs.ids[sample])
    again = _describe(pipeline, subset, "reference", ec, "reference check")
    expected = phase1_refs.vectors[sample]
    if again.vectors.shape != expected.shape:
        raise ExportError(
            f"recomputed reference descriptors have shape {again.vectors.shape}, Phase 1's "
            f"{expected.shape}"
        )
    worst = float(np.abs(again.vectors.astype(np.float64) - expected).max())
    same = (
        np.array_equal(again.vectors, expected)
        if ec.reference_tolerance == 0
        else worst <= ec.reference_tolerance
    )
    if not same:
        raise ExportError(
            f"recomputed reference descriptors differ from Phase 1 (max {worst:g}, "
            f"tolerance {ec.reference_tolerance:g})"
        )
    return worst


def export_phase1(ec: ExportConfig) -> Path:
    out = Path(ec.phase1_dir)
    if out.exists():
        raise ExportError(f"{out} exists: Phase 1 outputs are never overwritten")
    with deterministic_kernels(ec.deterministic):
        pipeline = _load(ec)
        artifact_hash = pipeline.artifact_hash
        data = Disc21(ec.data_root)
        query_ids = _query_ids(ec, ec.phase1_queries)
        queries = data.images("query").subset(query_ids)
        references = data.images("reference")
        refs = _describe(pipeline, references, "reference", ec, "phase 1 references")
        qs = _describe(pipeline, queries, "query", ec, "phase 1 queries")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed export
    tmp.mkdir(parents=True)
    stamp = {"artifact_hash": artifact_hash, "fisc_phase": 1}
    write_vectors(tmp / "references.h5", refs, attrs={**stamp, "set": "references"})
    write_vectors(tmp / "queries.h5", qs, attrs={**stamp, "set": "queries"})
    write_submission(tmp / "submission.h5", qs, refs, attrs={**stamp, "set": "submission"})
    record = {
        "artifact_hash": artifact_hash,
        "queries": len(qs.ids),
        "references": len(refs.ids),
        "dims": int(refs.vectors.shape[1]),
        "postprocess": pipeline.postprocess_spec,
        "files": {name: sha256_of(tmp / name) for name in PHASE1_FILES},
        "device": str(ec.device),
        "deterministic": ec.deterministic,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "phase1.json").write_text(json.dumps(record, indent=2) + "\n")
    tmp.rename(out)
    return out


def check_phase1(phase1: Path, artifact_hash: str) -> dict:
    """The Phase 1 record after checking every file it lists: present, sha256 unchanged,
    stamped with ``artifact_hash``."""
    stamp_file = phase1 / "phase1.json"
    if not stamp_file.is_file() or not (phase1 / "references.h5").is_file():
        raise ExportError(
            f"missing Phase 1 reference descriptors in {phase1} (export Phase 1 first)"
        )
    record = json.loads(stamp_file.read_text())
    if artifact_hash != record["artifact_hash"]:
        raise ExportError(
            f"artifact hash {artifact_hash} differs from Phase 1's "
            f"{record['artifact_hash']}: the model is not the frozen Phase 1 model"
        )
    problems = []
    for name, digest in record.get("files", {}).items():
        path = phase1 / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_of(path) != digest:
            problems.append(f"{name}: sha256 differs from phase1.json (modified since Phase 1)")
        elif read_attrs(path).get("artifact_hash") != artifact_hash:
            problems.append(f"{name}: not stamped with artifact hash {artifact_hash}")
    if "files" not in record:
        problems.append("phase1.json lists no files (written by an older fisc: export again)")
    if problems:
        raise ExportError(f"Phase 1 outputs in {phase1} fail their checks: " + "; ".join(problems))
    return record


def export_phase2(ec: ExportConfig) -> dict:
    started = time.perf_counter()
    phase1 = Path(ec.phase1_dir)
    out = Path(ec.phase2_submission)
    if out.exists():
        raise ExportError(f"{out} already holds a submission; move it away first")
    if not (phase1 / "phase1.json").is_file() or not (phase1 / "references.h5").is_file():
        raise ExportError(
            f"missing Phase 1 reference descriptors in {phase1} (export Phase 1 first)"
        )
    with deterministic_kernels(ec.deterministic):
        pipeline = _load(ec)
    artifact_hash = pipeline.artifact_hash
    record = check_phase1(phase1, artifact_hash)
    same_setup = (record["device"], record["torch_version"]) == (str(ec.device), torch.__version__)
    if not same_setup and ec.reference_tolerance == 0:
        raise ExportError(
            f"Phase 1 ran on {record['device']} with torch {record['torch_version']}, this "
            f"export on {ec.device} with torch {torch.__version__}: descriptors are bit-identical "
            "only on the same device and software. Export on the Phase 1 setup, or set "
            "reference_tolerance to accept rounding differences."
        )
    data = Disc21(ec.data_root)
    p1_queries = set(_query_ids(ec, ec.phase1_queries))
    p2_ids = _query_ids(ec, ec.phase2_queries)
    overlap = sorted(p1_queries & set(p2_ids))
    if overlap:
        raise ExportError(f"{len(overlap)} Phase 2 queries are Phase 1 queries, e.g. {overlap[:5]}")
    refs = read_vectors(phase1 / "references.h5")
    references = data.images("reference")
    if refs.ids.tolist() != list(references.ids):
        raise ExportError("Phase 1 reference descriptors do not cover the reference images")
    rng = np.random.default_rng(ec.seed)
    sample = np.sort(
        rng.choice(len(refs.ids), size=min(ec.reference_check_sample, len(refs.ids)), replace=False)
    )
    with deterministic_kernels(ec.deterministic):
        worst = recheck_references(pipeline, references, refs, sample, ec)
        p2_images = data.images("query").subset(p2_ids)
        queries = _describe(pipeline, p2_images, "query", ec, "phase 2 queries")
    attrs = {
        "artifact_hash": artifact_hash,
        "fisc_phase": 2,
        "set": "submission",
        "phase1_references_sha256": record["files"]["references.h5"],
    }
    with atomic_path(out) as tmp:
        write_submission(tmp, queries, refs, attrs=attrs)
        problems = validate_submission(tmp, query_ids=p2_ids, reference_ids=list(refs.ids))
        if problems:
            raise ExportError("Phase 2 submission fails validation:\n" + "\n".join(problems))
    return {
        "submission": str(out),
        "queries": len(queries.ids),
        "references": len(refs.ids),
        "dims": int(queries.vectors.shape[1]),
        "postprocess": pipeline.postprocess_spec,
        "artifact_hash": artifact_hash,
        "references_rechecked": int(len(sample)),
        "reference_max_abs_diff": worst,
        "device": str(ec.device),
        "seconds": round(time.perf_counter() - started, 1),
    }


def check_artifact_source(ec: ExportConfig) -> None:
    """An existing artifact must be the one ``ec`` would freeze: from ``ec.checkpoint`` (same
    sha256) and, with ``postprocess: run``, with that run's fitted post-processor."""
    from fisc.export.card import read_card
    from fisc.inference import run_postprocess_path

    if not ec.checkpoint or not Path(ec.checkpoint).is_file():
        return
    card = read_card(ec.artifact)
    frozen_from = (card.get("source_checkpoint") or {}).get("sha256")
    if frozen_from != sha256_of(ec.checkpoint):
        raise ExportError(
            f"artifact {ec.artifact} was frozen from another checkpoint than {ec.checkpoint} "
            "(retrained since?): move the artifact and the Phase 1 folder away to export this "
            "checkpoint, or set checkpoint=null to export the artifact as it is"
        )
    fitted = run_postprocess_path(ec.checkpoint)
    if ec.postprocess == "run" and fitted.is_file():
        from fisc.postprocess.spec import PostProcessor

        pp = card.get("postprocess") or {}
        run_pp = PostProcessor.load(fitted)
        if pp.get("spec") != run_pp.spec or pp.get("fit_set") != run_pp.fit_set:
            raise ExportError(
                f"artifact {ec.artifact} was frozen with post-processing {pp.get('spec')!r}, "
                f"not the run's fitted {run_pp.spec!r} ({fitted}): move the artifact and the "
                "Phase 1 folder away to export the run as it is now"
            )


def run_export(ec: ExportConfig) -> dict:
    """``make export-phase2``: freeze the checkpoint if there is no artifact yet, export
    Phase 1 if it is not there yet (never redone), then export Phase 2."""
    from fisc.export.freeze import freeze

    if not Path(ec.artifact).exists():
        if not ec.checkpoint or not Path(ec.checkpoint).is_file():
            raise ExportError(
                f"no artifact at {ec.artifact} and no checkpoint to freeze "
                f"({ec.checkpoint}); run `make demo` or set checkpoint"
            )
        freeze(ec.checkpoint, ec.artifact, postprocess=ec.postprocess)
    else:
        check_artifact_source(ec)
    runtime = None
    if ec.runtime_dir and ec.runtime_formats:
        from fisc.export.manifest import artifact_hash
        from fisc.export.runtime import export_runtimes, read_runtime_card

        if Path(ec.runtime_dir).exists():
            runtime = read_runtime_card(ec.runtime_dir, artifact_hash(ec.artifact))
        else:
            runtime = export_runtimes(
                ec.artifact,
                ec.runtime_dir,
                ec.runtime_formats,
                dynamic_resolution=ec.dynamic_resolution,
            )
    if not Path(ec.phase1_dir).exists():
        export_phase1(ec)
    summary = export_phase2(ec)
    if runtime is not None:
        summary["runtime"] = {
            "dir": ec.runtime_dir,
            **{fmt: e["max_abs_diff"] for fmt, e in runtime["exports"].items()},
        }
    return summary
