"""The repository's paths and the overrides of a training run that takes seconds on the tiny
minidisc (the ``tiny_minidisc`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CONF = REPO / "conf"


# a training run that takes seconds on the tiny minidisc: tiny_overrides(root) for train.py
TINY_TRAIN = [
    "model.train_size=32",
    "model.eval_size=32",
    "batch_size=8",
    "eval_batch_size=16",
    "num_workers=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1.0",
    "+trainer.enable_model_summary=false",
]


def tiny_overrides(root) -> list[str]:
    return [f"data.root={root}", "data.build_if_missing=false", *TINY_TRAIN]
