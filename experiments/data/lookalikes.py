"""Are minidisc's hardest non-matches lookalike *sources* (a benchmark defect) or edited copies
the model should have rejected (a model defect)?

    python experiments/data/lookalikes.py [--checkpoint CKPT] [--top 30]

For the split's distractor queries (edited copies of images that are not references), fisc
regenerates each query's *pristine* source image and asks, for the ``--top`` highest-scoring
false positives of a trained model (the learning curves' last demo checkpoint by default):
how similar is the unedited source to the reference it was confused with? Two measures, one
independent of any model: the 64-bit pHash Hamming distance (a pair within 10 bits would be
called a copy by a hash), and the model's own similarity of the pristine pair compared with
its similarity of true matches (edited query vs its reference). A false positive whose
pristine source already sits closer to the reference than the median true match is a
lookalike no edit-invariance can fix. The same two measures are reported for every
(distractor source, reference) pair, to count lookalikes in the data itself. Output:
``experiments/data/lookalikes.md`` and ``lookalikes.png`` (query | its source | the
reference it was matched to, for the top false positives).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

from fisc.baselines.phash import phash_descriptors  # noqa: E402
from fisc.challenge import load_ground_truth  # noqa: E402
from fisc.data.disc21 import Disc21, ImageSet  # noqa: E402
from fisc.data.minidisc import load_minidisc_manifest, source_image  # noqa: E402
from fisc.files import atomic_path  # noqa: E402
from fisc.inference import DescriptorPipeline, subset  # noqa: E402

SPLITS = {"phase2": "phase2_ground_truth.csv", "novel": "novel_ground_truth.csv"}


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between rows of two ±1 pHash matrices (n, 64) x (m, 64)."""
    return (a.shape[1] - a @ b.T) / 2


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "minidisc")
    p.add_argument("--checkpoint", type=Path,
                   default=ROOT / "outputs/curves/demo/seed0/checkpoints/last.ckpt")  # fmt: skip
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "data")
    a = p.parse_args()
    if not a.checkpoint.is_file():
        sys.exit(f"no checkpoint {a.checkpoint}: run `make curves` (or pass --checkpoint)")
    manifest = load_minidisc_manifest(a.data)
    spec = manifest["spec"]
    photos = {k: tuple(v) for k, v in manifest["photos"].items()}
    data = Disc21(a.data)
    pipeline = DescriptorPipeline.from_checkpoint(a.checkpoint)

    def describe(images: ImageSet) -> np.ndarray:
        d = subset(pipeline.raw(images, batch_size=64, num_workers=2)[0], images.ids)
        return unit_rows(d.vectors.astype(np.float64))

    def phash(images: ImageSet) -> np.ndarray:
        return phash_descriptors(images, progress=False).vectors

    refs = data.images("reference")
    ref_emb, ref_hash = describe(refs), phash(refs)
    shown = lambda path: path.relative_to(ROOT) if path.is_relative_to(ROOT) else path  # noqa: E731
    lines = [f"Model: `{shown(a.checkpoint)}`; data: `{shown(a.data)}` (minidisc seed "
             f"{spec['seed']}).", ""]  # fmt: skip
    gallery = []
    with tempfile.TemporaryDirectory() as tmp:
        for split, gt_name in SPLITS.items():
            if not (a.data / gt_name).is_file():
                continue
            gt = load_ground_truth(a.data / gt_name)
            queries = data.queries(gt)
            q_emb = describe(queries)
            q_ids = list(queries.ids)
            ref_ids = list(refs.ids)
            sim = q_emb @ ref_emb.T
            match = [q for q in q_ids if gt[q]]
            true_sim = np.array([sim[q_ids.index(q), ref_ids.index(gt[q])] for q in match])
            median_true = float(np.median(true_sim))
            # pristine sources of the distractor queries
            distract = [q for q in q_ids if not gt[q]]
            paths = []
            for q in distract:
                info = manifest["queries"][q]
                img = source_image(spec["seed"], "distractor", info["distractor_index"],
                                   spec["image_size"], photos)  # fmt: skip
                path = Path(tmp) / f"{split}-{q}.png"
                img.save(path)
                paths.append(path)
            src = ImageSet(tuple(distract), tuple(paths))
            src_emb = describe(src)
            src_hash = phash(src)
            src_sim = src_emb @ ref_emb.T
            src_ham = hamming(src_hash, ref_hash)
            # the top false positives: distractor queries' best reference scores
            d_rows = [q_ids.index(q) for q in distract]
            best = sim[d_rows].argmax(1)
            score = sim[d_rows].max(1)
            order = np.argsort(-score)[: a.top]
            fp_src_sim = src_sim[order, best[order]]
            fp_ham = src_ham[order, best[order]]
            look = (fp_src_sim >= median_true) | (fp_ham <= 10)
            # the data itself: every distractor source against every reference
            all_look = (src_sim.max(1) >= median_true) | (src_ham.min(1) <= 10)
            lines += [
                f"## {split}: {len(match)} matches, {len(distract)} distractor queries",
                "",
                f"- true matches (edited query vs its reference): model similarity median "
                f"{median_true:.3f} (quartiles {np.quantile(true_sim, 0.25):.3f}-"
                f"{np.quantile(true_sim, 0.75):.3f})",
                f"- top {len(order)} false positives: query-reference similarity "
                f"{score[order].min():.3f}-{score[order].max():.3f}; their *pristine* source vs "
                f"that reference: model similarity median {np.median(fp_src_sim):.3f}, pHash "
                f"distance median {np.median(fp_ham):.0f} bits (min {fp_ham.min():.0f})",
                f"- lookalikes among them (pristine source at least as similar as the median "
                f"true match, or within 10 pHash bits): **{int(look.sum())} of {len(order)}**",
                f"- lookalikes in the data: {int(all_look.sum())} of {len(distract)} distractor "
                f"sources have a reference that close (model: "
                f"{int((src_sim.max(1) >= median_true).sum())}, pHash <= 10 bits: "
                f"{int((src_ham.min(1) <= 10).sum())})",
                "",
            ]
            for k in order[:6]:
                q = distract[k]
                gallery.append((f"{split} {q}", queries.paths[q_ids.index(q)], paths[k],
                                refs.paths[best[k]], float(score[k]), float(src_sim[k, best[k]]),
                                int(src_ham[k, best[k]])))  # fmt: skip
        _plot(gallery, a.out / "lookalikes.png")
    a.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out / "lookalikes.md") as tmp_md:
        tmp_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.3 * len(rows)), squeeze=False)
    for ax_row, (title, q, s, r, score, src_sim, ham) in zip(axes, rows, strict=True):
        for ax, img, label in zip(
            ax_row, (q, s, r),
            (f"{title} (query)", "its pristine source",
             f"reference: sim {score:.2f}\nsource sim {src_sim:.2f}, pHash {ham} bits"),
            strict=True,
        ):  # fmt: skip
            ax.imshow(Image.open(img).convert("RGB"))
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


if __name__ == "__main__":
    main()
