"""Post-processing of descriptors, fitted on training descriptors only (see :mod:`.steps`)."""

from fisc.postprocess.spec import PostProcessor, parse_spec
from fisc.postprocess.steps import (
    DBA,
    L2,
    NES,
    PCA,
    STEPS,
    Center,
    IscNorm,
    PCAWhiten,
    ScoreNorm,
    Step,
    Stretch,
    train_topk,
)
from fisc.postprocess.sweep import sweep, sweep_table

__all__ = [
    "DBA",
    "L2",
    "NES",
    "PCA",
    "STEPS",
    "Center",
    "IscNorm",
    "PCAWhiten",
    "PostProcessor",
    "ScoreNorm",
    "Step",
    "Stretch",
    "parse_spec",
    "sweep",
    "sweep_table",
    "train_topk",
]
