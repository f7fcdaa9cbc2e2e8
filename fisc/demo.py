"""``fisc demo``: minidisc -> train the CPU default -> extract -> evaluate, one table per split.

Systems: the trained model (its last checkpoint, so no split picked it), the same model with
the recipe's post-processing (fitted by the run on training descriptors: what ``fisc freeze``
ships), the same backbone before training (ImageNet weights, untrained projection), and a
perceptual-hash baseline (imagehash pHash). Every row can be reproduced with ``fisc extract``
(``--checkpoint``, ``--artifact``, ``--baseline untrained|phash``) and ``fisc evaluate``.
Splits: the dev queries (watched during training) and the Phase 2 rehearsal queries (never
seen during training) and, where the data has it, the novel-edits split (queries carrying edits
that no fisc op makes), all against all references, leaderboard protocol.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from hydra import compose, initialize_config_dir

from fisc.baselines.phash import phash_descriptors
from fisc.baselines.untrained import untrained_pipeline
from fisc.challenge import load_ground_truth
from fisc.data.disc21 import Disc21
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import write_vectors
from fisc.evaluation import EvalResult, evaluate, results_table
from fisc.files import atomic_path, write_json
from fisc.inference import DescriptorPipeline, load_fitted_postprocessor, subset
from fisc.paths import config_dir
from fisc.train.config import check_config
from fisc.train.run import train

log = logging.getLogger(__name__)
SPLITS = {
    "dev": "dev_ground_truth.csv",
    "phase2": "phase2_ground_truth.csv",
    "novel": "novel_ground_truth.csv",  # edits no fisc op makes (fisc.data.novel_edits)
}


def run_demo(
    overrides: list[str] | None = None, progress: bool = True
) -> dict[str, dict[str, EvalResult]]:
    """Train, then score every system on every split; returns ``{split: {system: result}}``."""
    started = time.perf_counter()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", *(overrides or [])])
    m = check_config(cfg)["model"]
    result = train(cfg)
    train_minutes = (time.perf_counter() - started) / 60
    out_dir = Path(cfg.run_dir).parent
    checkpoint = result.last_checkpoint or result.best_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint under {result.run_dir}")

    data = Disc21(cfg.data.root)
    root = Path(cfg.data.root)
    truths = {s: load_ground_truth(root / f) for s, f in SPLITS.items() if (root / f).is_file()}
    queries = data.queries({q: r for gt in truths.values() for q, r in gt.items()})
    references = data.images("reference")
    extract = dict(batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, progress=progress)

    def describe(name: str, pipeline: DescriptorPipeline) -> dict[str, Descriptors]:
        """Raw descriptors per role, written to ``descriptors/<name>_<role>.h5``."""
        sets = {}
        for role, images in (("query", queries), ("reference", references)):
            sets[role], _ = pipeline.raw(images, desc=f"{name}: {role}", **extract)
            write_vectors(out_dir / "descriptors" / f"{name}_{role}.h5", sets[role])
        return sets

    systems: dict[str, tuple[Descriptors, Descriptors, int]] = {}
    trained = DescriptorPipeline.from_checkpoint(checkpoint)
    raw = describe("trained", trained)
    shipped = f"fisc trained ({m.name}, {m.dims}-d)"  # what make export-phase2 ships
    systems[shipped] = (raw["query"], raw["reference"], 256)
    if result.postprocess:  # the recipe's post-processor, fitted by the run on training images
        post = trained.with_postprocessor(
            load_fitted_postprocessor(result.postprocess["file"], checkpoint)
        )
        final = {role: post.finalize(raw[role], role) for role in raw}
        for role, d in final.items():
            write_vectors(out_dir / "descriptors" / f"trained_post_{role}.h5", d)
        name = f"fisc trained + {post.postprocess_spec} ({post.dims}-d)"
        systems[name] = (final["query"], final["reference"], post.max_dims)
        shipped = name
    before = describe("untrained", untrained_pipeline(m, cfg.seed))  # fresh projection
    systems[f"before training ({m.name}, {m.dims}-d)"] = (
        before["query"],
        before["reference"],
        256,
    )
    systems["pHash (imagehash, 64-bit)"] = (
        phash_descriptors(queries, progress=progress),
        phash_descriptors(references, progress=progress),
        256,
    )

    rows = {
        split: {
            name: evaluate(subset(q, gt), r, gt, max_dims=dims)
            for name, (q, r, dims) in systems.items()
        }
        for split, gt in truths.items()
    }
    elapsed = time.perf_counter() - started
    parts = [f"checkpoint {checkpoint}; {elapsed / 60:.1f} min in all, of which "
             f"{train_minutes:.1f} min building the data (if absent) and training"]  # fmt: skip
    for split, gt in truths.items():
        n_match = sum(r is not None for r in gt.values())
        ours, phash = rows[split][shipped], rows[split]["pHash (imagehash, 64-bit)"]
        parts.append(
            f"minidisc {split} split: {len(gt)} queries ({n_match} with a match) x "
            f"{len(references)} references\n\n{results_table(rows[split], isc_recalls=False)}\n\n"
            f"margin of the shipped system over pHash: μAP {ours.micro_ap - phash.micro_ap:+.4f}, "
            f"R@P90 {ours.recall_at_p90 - phash.recall_at_p90:+.4f}"
        )
    report = "\n\n".join(parts)
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(report + "\n")
    payload = {s: {k: asdict(v) for k, v in r.items()} for s, r in rows.items()}
    write_json(out_dir / "results.json", payload)
    print(f"\n{report}\n\nwritten: {out_dir / 'results.md'}")
    return rows
