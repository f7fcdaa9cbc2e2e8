"""``fisc demo``: minidisc -> train the CPU default -> extract -> evaluate, one table.

Systems compared on the minidisc dev split (leaderboard protocol):
the trained model, the same backbone before training (ImageNet weights, untrained
projection), and a perceptual-hash baseline (imagehash pHash).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from fisc.baselines.phash import phash_descriptors
from fisc.data.disc21 import Disc21
from fisc.descriptors.extract import extract_descriptors
from fisc.descriptors.h5io import atomic_path, write_vectors
from fisc.evaluation import EvalResult, evaluate, results_table
from fisc.metrics.micro_ap import load_ground_truth
from fisc.models.checkpoint import load_checkpoint_model
from fisc.models.descriptor import build_descriptor_model
from fisc.train.config import check_config
from fisc.train.run import train

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def run_demo(overrides: list[str] | None = None, progress: bool = True) -> dict[str, EvalResult]:
    started = time.perf_counter()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", *(overrides or [])])
    groups = check_config(cfg)
    result = train(cfg)
    out_dir = Path(cfg.run_dir).parent
    checkpoint = result.best_checkpoint or result.last_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint under {result.run_dir}")

    data = Disc21(cfg.data.root)
    ground_truth = load_ground_truth(Path(cfg.data.root) / cfg.data.val_ground_truth)
    queries, references = data.queries(ground_truth), data.images("reference")
    torch.set_grad_enabled(False)

    def score(name: str, model, size, mean, std) -> EvalResult:
        descs = {}
        for split, images in (("query", queries), ("reference", references)):
            descs[split], _ = extract_descriptors(
                model,
                images,
                size,
                mean,
                std,
                batch_size=cfg.eval_batch_size,
                num_workers=cfg.num_workers,
                progress=progress,
                desc=f"{name}: {split}",
            )
            write_vectors(out_dir / "descriptors" / f"{name}_{split}.h5", descs[split])
        return evaluate(descs["query"], descs["reference"], ground_truth)

    m = groups["model"]
    rows: dict[str, EvalResult] = {}
    trained, _ = load_checkpoint_model(checkpoint)
    rows[f"fisc trained ({m.name}, {m.dims}-d)"] = score(
        "trained", trained, m.eval_size, m.mean, m.std
    )
    torch.manual_seed(cfg.seed)
    untrained = build_descriptor_model(m)  # same ImageNet backbone, fresh projection
    rows[f"before training ({m.name}, {m.dims}-d)"] = score(
        "untrained", untrained, m.eval_size, m.mean, m.std
    )
    ph_q, ph_r = (
        phash_descriptors(queries, progress=progress),
        phash_descriptors(references, progress=progress),
    )
    rows["pHash (imagehash, 64-bit)"] = evaluate(ph_q, ph_r, ground_truth)

    table = results_table(rows)
    elapsed = time.perf_counter() - started
    header = (
        f"minidisc dev split: {len(queries)} queries "
        f"({sum(r is not None for r in ground_truth.values())} with a match) x "
        f"{len(references)} references; checkpoint {checkpoint}; {elapsed / 60:.1f} min"
    )
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(f"{header}\n\n{table}\n")
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps({k: asdict(v) for k, v in rows.items()}, indent=2) + "\n")
    print(f"\n{header}\n\n{table}\n\nwritten: {out_dir / 'results.md'}")
    return rows
