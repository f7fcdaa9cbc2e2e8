"""A fingerprint of the training views: sha256 over the two views' pixels and GPU seeds of the
first items of minidisc and of the DISC21-like folder, under ``disc_asym``, ``disc_full`` and
``basic``, with the default settings and with the GPU-feeding ones, at 96 px. A change meant
to make the views faster without changing them must leave it as it was:

    git stash; python benchmarks/views_hash.py; git stash pop; python benchmarks/views_hash.py

The views are keyed by (seed, epoch, item, view), so the hash depends only on the code, the
images and the installed libraries (OpenCV, Pillow, numpy), not on the machine's load.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from bench_train import build_disc21like
from bench_views import dataset

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("disc_asym", "disc_full", "basic")
SETTINGS = ([], ["augment.work_side=1", "data.decode_min_side=96"])


def views_hash(folders: list[tuple[Path, int]], size: int = 96) -> str:
    h = hashlib.sha256()
    for folder, n in folders:
        for augment in PIPELINES:
            for extra in SETTINGS:
                ds = dataset(folder, augment, list(extra), size)
                for i in range(n):
                    a, b, seeds, _ = ds[i]
                    for t in (a, b, seeds):
                        h.update(t.numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minidisc-items", type=int, default=120)
    p.add_argument("--disc21like-items", type=int, default=30)
    a = p.parse_args()
    minidisc = ROOT / "data" / "minidisc" / "images" / "training"
    if not minidisc.is_dir():
        raise SystemExit(f"{minidisc} not found: run `python train.py` once (it builds minidisc)")
    disc21like = build_disc21like(ROOT / "data" / "disc21like", 2000)
    print(views_hash([(minidisc, a.minidisc_items), (disc21like, a.disc21like_items)]))


if __name__ == "__main__":
    main()
