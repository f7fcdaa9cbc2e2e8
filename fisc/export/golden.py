"""Golden descriptors: an artifact's probe descriptors, computed when freezing and
recomputed and compared when loading."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fisc.data.disc21 import ImageSet, list_images
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import read_vectors
from fisc.export.artifact import GOLDEN_FILE, GOLDEN_FINAL_FILES, PROBE_DIR, ArtifactError

if TYPE_CHECKING:
    from fisc.inference import DescriptorPipeline

GOLDEN_BATCH_SIZE = 8


# Golden descriptors are computed on CPU when freezing; on another device they differ by
# kernel rounding. This bound has not been measured on a GPU yet (benchmarks/gpu_check_export.sh
# measures it); it is far below the distances that decide a match (~0.1 on unit vectors).
GPU_GOLDEN_TOLERANCE = 1e-4


def golden_tolerance(device: str | torch.device) -> float:
    """The default golden-check tolerance on ``device``: 0 (bit-identical) on CPU."""
    return 0.0 if torch.device(device).type == "cpu" else GPU_GOLDEN_TOLERANCE


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
