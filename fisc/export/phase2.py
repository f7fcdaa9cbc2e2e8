"""Phase 1 export (frozen artifact -> reference and Phase 1 query descriptors, submission) and
Phase 2 export (same artifact, Phase 2 queries only, Phase 1 references reused after a check).

The Phase 1 directory is written once and never overwritten; every file in it and the
Phase 2 submission carry the artifact hash, and Phase 2 refuses an artifact whose hash differs.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fisc.data.disc21 import Disc21, ImageSet
from fisc.descriptors.extract import extract_descriptors
from fisc.descriptors.h5io import (
    Descriptors,
    atomic_path,
    read_vectors,
    write_submission,
    write_vectors,
)
from fisc.export.freeze import load_artifact
from fisc.export.validate import read_id_list, validate_submission


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


def _query_ids(ec: ExportConfig, name: str) -> list[str]:
    ids, _ = read_id_list(Path(ec.data_root) / name, "query")
    return ids


def _describe(model, cfg, images: ImageSet, ec: ExportConfig, desc: str) -> Descriptors:
    d, skipped = extract_descriptors(
        model,
        images,
        cfg.eval_size,
        cfg.mean,
        cfg.std,
        batch_size=ec.batch_size,
        num_workers=ec.num_workers,
        desc=desc,
    )
    if skipped:
        raise ExportError(f"{len(skipped)} {desc} images could not be decoded: {skipped[:5]}")
    return d


def export_phase1(ec: ExportConfig) -> Path:
    out = Path(ec.phase1_dir)
    if out.exists():
        raise ExportError(f"{out} exists: Phase 1 outputs are never overwritten")
    model, cfg, artifact_hash = load_artifact(ec.artifact)
    data = Disc21(ec.data_root)
    query_ids = _query_ids(ec, ec.phase1_queries)
    queries = data.images("query").subset(query_ids)
    references = data.images("reference")
    refs = _describe(model, cfg, references, ec, "phase 1 references")
    qs = _describe(model, cfg, queries, ec, "phase 1 queries")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed export
    tmp.mkdir(parents=True)
    write_vectors(tmp / "references.h5", refs)
    write_vectors(tmp / "queries.h5", qs)
    write_submission(tmp / "submission.h5", qs, refs, attrs={"artifact_hash": artifact_hash})
    (tmp / "phase1.json").write_text(
        json.dumps(
            {"artifact_hash": artifact_hash, "queries": len(qs.ids), "references": len(refs.ids)},
            indent=2,
        )
        + "\n"
    )
    tmp.rename(out)
    return out


def export_phase2(ec: ExportConfig) -> dict:
    started = time.perf_counter()
    phase1 = Path(ec.phase1_dir)
    out = Path(ec.phase2_submission)
    if out.exists():
        raise ExportError(f"{out} already holds a submission; move it away first")
    stamp_file = phase1 / "phase1.json"
    if not stamp_file.is_file() or not (phase1 / "references.h5").is_file():
        raise ExportError(
            f"missing Phase 1 reference descriptors in {phase1} (export Phase 1 first)"
        )
    stamp = json.loads(stamp_file.read_text())
    model, cfg, artifact_hash = load_artifact(ec.artifact)
    if artifact_hash != stamp["artifact_hash"]:
        raise ExportError(
            f"artifact hash {artifact_hash} differs from Phase 1's "
            f"{stamp['artifact_hash']}: the model is not the frozen Phase 1 model"
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
    again = _describe(model, cfg, references.subset(refs.ids[sample]), ec, "reference check")
    if not np.array_equal(again.vectors, refs.vectors[sample]):
        worst = float(np.abs(again.vectors - refs.vectors[sample]).max())
        raise ExportError(f"recomputed reference descriptors differ from Phase 1 (max {worst:g})")
    queries = _describe(model, cfg, data.images("query").subset(p2_ids), ec, "phase 2 queries")
    with atomic_path(out) as tmp:
        write_submission(tmp, queries, refs, attrs={"artifact_hash": artifact_hash})
        problems = validate_submission(tmp, query_ids=p2_ids, reference_ids=list(refs.ids))
        if problems:
            raise ExportError("Phase 2 submission fails validation:\n" + "\n".join(problems))
    return {
        "submission": str(out),
        "queries": len(queries.ids),
        "references": len(refs.ids),
        "dims": int(queries.vectors.shape[1]),
        "artifact_hash": artifact_hash,
        "references_rechecked": int(len(sample)),
        "seconds": round(time.perf_counter() - started, 1),
    }


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
        freeze(ec.checkpoint, ec.artifact)
    if not Path(ec.phase1_dir).exists():
        export_phase1(ec)
    return export_phase2(ec)
