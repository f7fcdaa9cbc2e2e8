"""``fisc demo``: minidisc -> train the CPU default -> extract -> evaluate, one table per split.

Systems: the trained model (its last checkpoint, so no split picked it), the same backbone
before training (ImageNet weights, untrained projection), and a perceptual-hash baseline
(imagehash pHash). Splits: the dev queries (watched during training) and the Phase 2
rehearsal queries (never seen during training), both against all references, leaderboard
protocol.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from fisc.baselines.phash import phash_descriptors
from fisc.data.disc21 import Disc21
from fisc.descriptors.extract import extract_descriptors
from fisc.descriptors.h5io import Descriptors, atomic_path, write_vectors
from fisc.evaluation import EvalResult, evaluate, results_table
from fisc.metrics.micro_ap import load_ground_truth
from fisc.models.checkpoint import load_checkpoint_model
from fisc.models.descriptor import build_descriptor_model
from fisc.train.config import check_config
from fisc.train.run import train

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SPLITS = {"dev": "dev_ground_truth.csv", "phase2": "phase2_ground_truth.csv"}


def _subset(d: Descriptors, ids) -> Descriptors:
    keep = np.isin(d.ids, list(ids))
    return Descriptors(d.ids[keep], d.vectors[keep])


def run_demo(
    overrides: list[str] | None = None, progress: bool = True
) -> dict[str, dict[str, EvalResult]]:
    """Train, then score every system on every split; returns ``{split: {system: result}}``."""
    started = time.perf_counter()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", *(overrides or [])])
    m = check_config(cfg)["model"]
    result = train(cfg)
    out_dir = Path(cfg.run_dir).parent
    checkpoint = result.last_checkpoint or result.best_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint under {result.run_dir}")

    data = Disc21(cfg.data.root)
    truths = {split: load_ground_truth(Path(cfg.data.root) / f) for split, f in SPLITS.items()}
    queries = data.queries({q: r for gt in truths.values() for q, r in gt.items()})
    references = data.images("reference")

    def cnn(name: str, model) -> tuple[Descriptors, Descriptors]:
        sets = []
        for split, images in (("query", queries), ("reference", references)):
            d, _ = extract_descriptors(
                model,
                images,
                m.eval_size,
                m.mean,
                m.std,
                batch_size=cfg.eval_batch_size,
                num_workers=cfg.num_workers,
                progress=progress,
                desc=f"{name}: {split}",
            )
            write_vectors(out_dir / "descriptors" / f"{name}_{split}.h5", d)
            sets.append(d)
        return sets[0], sets[1]

    systems: dict[str, tuple[Descriptors, Descriptors]] = {}
    with torch.no_grad():
        trained, _ = load_checkpoint_model(checkpoint)
        systems[f"fisc trained ({m.name}, {m.dims}-d)"] = cnn("trained", trained)
        torch.manual_seed(cfg.seed)
        untrained = build_descriptor_model(m)  # same ImageNet backbone, fresh projection
        systems[f"before training ({m.name}, {m.dims}-d)"] = cnn("untrained", untrained)
    systems["pHash (imagehash, 64-bit)"] = (
        phash_descriptors(queries, progress=progress),
        phash_descriptors(references, progress=progress),
    )

    rows = {
        split: {name: evaluate(_subset(q, gt), r, gt) for name, (q, r) in systems.items()}
        for split, gt in truths.items()
    }
    elapsed = time.perf_counter() - started
    parts = [f"checkpoint {checkpoint}; {elapsed / 60:.1f} min"]
    for split, gt in truths.items():
        n_match = sum(r is not None for r in gt.values())
        parts.append(
            f"minidisc {split} split: {len(gt)} queries ({n_match} with a match) x "
            f"{len(references)} references\n\n{results_table(rows[split])}"
        )
    report = "\n\n".join(parts)
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(report + "\n")
    with atomic_path(out_dir / "results.json") as tmp:
        payload = {s: {k: asdict(v) for k, v in r.items()} for s, r in rows.items()}
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n{report}\n\nwritten: {out_dir / 'results.md'}")
    return rows
