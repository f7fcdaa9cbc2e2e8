"""``make bench-train``: end-to-end training throughput on the real data path, per pipeline.

    python benchmarks/bench_train.py                                  # minidisc + DISC21-like
    python benchmarks/bench_train.py --data disc21like --augment disc_full --workers 8 \\
        --device cuda -- model=resnet50 model.train_size=224

``--device cuda`` composes ``trainer=gpu`` (with its data settings: ``augment.work_side=1``,
``data.decode_min_side`` = the train size) unless the overrides pick a trainer; each row records
the ``work_side`` and decode scale limit it ran with.

For each data set and ``augment`` pipeline, three measurements of the training data path as
``train.py`` builds it (``fisc.train.run.build_datamodule`` / ``build_module``):

1. **stages**, in this process on one core, per view: decode (the training set's ``load``), the
   CPU edits, tensor conversion, the per-sample GPU stage where it runs on CPU, collation, and
   the model's training step (forward, backward, optimizer) per view;
2. **loader**: views/s the training DataLoader delivers with ``--workers`` workers (no model),
   and per CPU-core-second (divided by the cores the workers use); side by side, the same
   loader with OpenCV's default threads in each worker (what fisc did before it pinned one
   thread per worker; ``--no-opencv-ab`` skips it);
3. **end to end**: ``pytorch_lightning.Trainer.fit`` for ``--steps`` steps after ``--warmup``,
   views/s and the **data wait**: the share of the time the training loop waits between one
   step's end and the next step's start (fetching the batch, transfer, the GPU stage).

From the loader's per-core rate it prints the cores one device needs at ``--target`` views/s
(default 3,659: ResNet-50 at 224 px on one H100, the model step alone). The DISC21-like folder
(``--disc21like-dir``, built once) holds ``--disc21like-n`` JPEGs at quality 90 whose longest
side is drawn log-uniformly from 480 to 1024 px (DISC21's images are of that order; its exact
size distribution is not used here), aspect 0.6-1.6, with minidisc's procedural content.
Results: a table on stdout and JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from fisc.files import atomic_path
from fisc.malloc import keep_freed_memory
from fisc.train.config import check_config
from fisc.train.run import build_datamodule, build_module
from fisc.train.sources import resolve_data

ROOT = Path(__file__).resolve().parents[1]
H100_RESNET50_VIEWS_S = 3659.0


def _disc21like_chunk(folder: Path, seed: int, indices: list[int]) -> int:
    from fisc.data.minidisc import role_photos, source_image

    photos = role_photos(seed)
    for i in indices:
        path = folder / f"T{i:06d}.jpg"
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, 4242, i])
        longest = int(round(np.exp(rng.uniform(np.log(480), np.log(1024)))))
        img = source_image(seed, "training", i, longest, photos)
        with atomic_path(path) as tmp:
            img.convert("RGB").save(tmp, format="JPEG", quality=90)
    return len(indices)


def build_disc21like(folder: Path, n: int, seed: int = 0, workers: int = 1) -> Path:
    """``n`` JPEGs of DISC21-like sizes in ``folder`` (kept: a rerun reuses them), written by
    ``workers`` spawned processes; each image has its own random stream, so the bytes do not
    depend on ``workers``."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(n) if not (folder / f"T{i:06d}.jpg").is_file()]
    chunks = [todo[k : k + 16] for k in range(0, len(todo), 16)]
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            _disc21like_chunk(folder, seed, c)
        return folder
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for f in [pool.submit(_disc21like_chunk, folder, seed, c) for c in chunks]:
            f.result()
    return folder


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_datamodule(overrides: list[str], accelerator: str | None = None):
    """``(cfg, groups, train images, data module)`` as ``train.py`` builds them: the config
    composed with ``overrides`` and checked, the data resolved, the training set built."""
    cfg = compose_cfg(overrides)
    if accelerator is not None:
        cfg.trainer.accelerator = accelerator
    groups = check_config(cfg)
    train_images, _ = resolve_data(groups["data"])
    dm = build_datamodule(cfg, groups, train_images, None)
    dm.train_dataloader()  # builds the training set
    return cfg, groups, train_images, dm


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``("default", [])`` then one ``(label, overrides)`` per ``LABEL=OVERRIDE[,...]``."""
    variants = [("default", [])]
    for v in specs:
        label, sep, overrides = v.partition("=")
        if not sep or not label:
            raise ValueError(f"--variant {v!r}: expected LABEL=OVERRIDE[,OVERRIDE...]")
        variants.append((label, [o for o in overrides.split(",") if o]))
    return variants


def stage_times(dm, module, device: str, n: int) -> dict[str, float]:
    """Milliseconds per view of each stage, in this process (one core)."""
    import cv2

    cv2.setNumThreads(1)  # one core, as in a loader worker
    ds = dm.train_set
    per = {k: [] for k in ("decode", "cpu_edits", "to_tensor", "gpu_stage")}
    views = []
    for i in range(n):
        t0 = time.perf_counter()
        img = ds.load(i % len(ds))[1]  # the training set's own decode
        t1 = time.perf_counter()
        per["decode"].append((t1 - t0) / 2)  # one decode feeds both views
        for v in range(2):
            rng = np.random.default_rng([0, 0, i, v])
            t1 = time.perf_counter()
            pixels, gpu_seed = ds.views[v](img, rng, ds.other_image)
            t2 = time.perf_counter()
            out = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
            t3 = time.perf_counter()
            gpu = ds.worker_gpu[v]
            if gpu is not None:
                with torch.no_grad():
                    gpu(out[None].float().div_(255.0), torch.tensor([gpu_seed]))
            t4 = time.perf_counter()
            per["cpu_edits"].append(t2 - t1)
            per["to_tensor"].append(t3 - t2)
            per["gpu_stage"].append(t4 - t3)
            views.append(out)
    ms = {k: 1000 * statistics.fmean(v) for k, v in per.items()}
    b = dm.per_device_batch()
    t = time.perf_counter()
    a = torch.stack(views[:b])
    torch.stack(views[b : 2 * b] or views[:b])
    ms["collate"] = 1000 * (time.perf_counter() - t) / (2 * len(a))
    ms["model_step"] = model_step_ms(module, a.shape[-1], b, device)
    return ms


def model_step_ms(module, size: int, batch: int, device: str, steps: int = 3) -> float:
    """Forward + backward + AdamW step on a batch of two views, per view (after one warm-up)."""
    module = module.to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    x = torch.randn(2 * batch, 3, size, size, device=device)
    ids = torch.arange(batch, device=device).repeat(2)
    times = []
    for k in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = module.loss(module.model(x).float(), ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.fmean(times) / (2 * batch)


def warm_batch_count(num_workers: int, warm_batches: int) -> int:
    """Batches :func:`loader_rate` lets through before it starts the clock."""
    return max(1, num_workers, warm_batches)


def loader_rate(dm, batches: int, warm_batches: int = 0) -> float:
    """Views/s the training DataLoader delivers, timed after each worker's first batch (the
    workers start together, so their first batches arrive together and would flatter the
    rate), or after ``warm_batches`` if more: fresh workers fill their caches (fonts, emoji,
    kept glyphs) over their first thousands of views, which a training run's persistent
    workers have long done."""
    loader = dm.train_dataloader()
    it = iter(loader)
    warm = warm_batch_count(dm.num_workers, warm_batches)
    t = n = done = 0
    while done < warm + batches:
        try:
            a, b, *_ = next(it)
        except StopIteration:  # a small data set: the next epoch
            dm.sampler.set_epoch(dm.sampler.epoch + 1)
            it = iter(loader)
            continue
        done += 1
        if done == warm:
            t = time.perf_counter()
        elif done > warm:
            n += len(a) + len(b)
    return n / (time.perf_counter() - t)


class Clock(pl.Callback):
    """Wall time of the steps after ``warmup``, and the time between steps (data wait)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.wait, self._last = warmup, None, None, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        elif self.start is not None and self._last is not None:
            self.wait += now - self._last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._last = self.end = time.perf_counter()


def end_to_end(cfg, groups, dm, module, steps: int, warmup: int) -> dict:
    clock = Clock(warmup)
    trainer_args = {k: v for k, v in dict(cfg.trainer).items() if k in ("accelerator", "devices",
                    "precision", "strategy")}  # fmt: skip
    trainer = pl.Trainer(**trainer_args, max_steps=warmup + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[clock])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    elapsed = clock.end - clock.start
    views = 2 * dm.per_device_batch() * (steps - 1)  # steps after the first timed start
    return {"views_per_s": views / elapsed, "data_wait": clock.wait / elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=["minidisc", "disc21like"],
                   help="minidisc, disc21like or an image folder")  # fmt: skip
    p.add_argument("--augment", nargs="+", default=["basic", "disc_full"])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=8, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--loader-batches",
        type=int,
        default=None,
        help="batches the loader rate is timed over (default: --steps); more gives a steadier "
        "figure on a machine whose pace drifts",
    )
    p.add_argument(
        "--warm-batches",
        type=int,
        default=0,
        help="batches the loader delivers before its rate is timed (default: one per worker); "
        "its workers are fresh, and fill their caches over their first thousands of views",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="loader timings per variant, the variants interleaved round by round; the row "
        "gives the median and the range (on a machine whose pace drifts, use 5 or more)",
    )
    p.add_argument("--stage-samples", type=int, default=32)
    p.add_argument("--target", type=float, default=H100_RESNET50_VIEWS_S)
    p.add_argument("--disc21like-dir", type=Path, default=ROOT / "data" / "disc21like")
    p.add_argument("--disc21like-n", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_cpu.json")
    p.add_argument(
        "--no-opencv-ab",
        dest="opencv_ab",
        action="store_false",
        help="skip the loader rerun with OpenCV's default threads in each worker",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=OVERRIDES",
        help="a further row per data set and pipeline with these comma-separated Hydra "
        "overrides, e.g. 'fast=augment.work_side=1,data.decode_min_side=224' (repeatable)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    a = p.parse_args()
    try:
        variants = parse_variants(a.variant)
    except ValueError as e:
        p.error(str(e))
    if a.rounds < 1:
        p.error(f"--rounds must be at least 1, got {a.rounds}")
    if a.device == "cuda" and not any(o.startswith("trainer=") for o in a.overrides):
        a.overrides = ["trainer=gpu", *a.overrides]  # what train.py trainer=gpu feeds the GPU
    keep_freed_memory()  # as train.py does (fisc/malloc.py); workers forked later inherit it
    batches = a.loader_batches or a.steps  # the loader rate's timing window
    rows = []
    for data in a.data:
        if data == "minidisc":
            data_args = []
        else:
            folder = Path(data) if data != "disc21like" else build_disc21like(
                a.disc21like_dir, a.disc21like_n, workers=max(1, a.workers))  # fmt: skip
            data_args = ["data=folder", f"data.root={folder}"]
        for augment in a.augment:
            runs = []  # one per variant: its config, data module and measurements
            for variant, extra in variants:
                cfg, groups, train_images, dm = train_datamodule(
                    [*data_args, f"augment={augment}", f"num_workers={a.workers}",
                     "logger.media=false", *a.overrides, *extra],
                    "gpu" if a.device == "cuda" else None)  # fmt: skip
                module = build_module(cfg, groups, len(train_images))
                ms = stage_times(dm, module, a.device, a.stage_samples)
                runs.append({"variant": variant, "extra": extra, "cfg": cfg, "groups": groups,
                             "images": train_images, "dm": dm, "ms": ms, "rates": []})  # fmt: skip
            # the loader rate, variants interleaved round by round: a machine whose pace drifts
            # over minutes slows every variant alike, and the spread shows how much it drifted
            for _ in range(a.rounds):
                for r in runs:
                    r["rates"].append(loader_rate(r["dm"], batches, a.warm_batches))
            cores = max(1, a.workers)
            for r in runs:
                cfg, groups, dm, train_images = r["cfg"], r["groups"], r["dm"], r["images"]
                loader_cv2 = None
                if a.opencv_ab and a.workers > 0:  # the same loader, OpenCV's default threads
                    import cv2

                    cv2.setNumThreads(-1)  # OpenCV's default: one thread per core, per worker
                    dm_cv2 = build_datamodule(cfg, groups, train_images, None)
                    dm_cv2.pin_opencv_threads = False
                    dm_cv2.train_dataloader()
                    loader_cv2 = loader_rate(dm_cv2, batches, a.warm_batches)
                    del dm_cv2
                e2e = end_to_end(cfg, groups, dm, build_module(cfg, groups, len(train_images)),
                                 a.steps, a.warmup)  # fmt: skip
                px = statistics.median(Image.open(p).size[0] for p in train_images.paths[:50])
                loader = statistics.median(r["rates"])
                per_core = [x / cores for x in r["rates"]]
                row = {
                    "data": data,
                    "augment": augment,
                    "variant": r["variant"],
                    "overrides": r["extra"],
                    "base_overrides": a.overrides,
                    "median_width_px": px,
                    "train_size": groups["model"].train_size,
                    "work_side": groups["augment"].work_side,
                    "decode_min_side": dm.decode_min_side,  # None: JPEGs decode in full
                    "model": groups["model"].name,
                    "workers": a.workers,
                    "device": a.device,
                    "stage_ms_per_view": {k: round(v, 3) for k, v in r["ms"].items()},
                    "loader_batches": batches,
                    "warm_batches": warm_batch_count(a.workers, a.warm_batches),
                    "rounds": a.rounds,
                    "loader_views_per_s": round(loader, 1),
                    "loader_views_per_core_s": round(loader / cores, 1),
                    "loader_views_per_core_s_rounds": [round(x, 1) for x in per_core],
                    "loader_views_per_s_opencv_default_threads": (
                        round(loader_cv2, 1) if loader_cv2 is not None else None
                    ),
                    "cores_for_target": round(a.target / (loader / cores), 1),
                    "cores_for_target_min_max": [
                        round(a.target / max(per_core), 1),
                        round(a.target / min(per_core), 1),
                    ],
                    "train_views_per_s": round(e2e["views_per_s"], 1),
                    "data_wait": round(e2e["data_wait"], 3),
                }
                if r is not runs[0]:  # each round's rate over the first variant's, median
                    row["loader_ratio_to_default_median"] = round(
                        statistics.median(
                            x / y for x, y in zip(r["rates"], runs[0]["rates"], strict=True)
                        ),
                        3,
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_results(a.out, rows, a.target)  # after each row: a cut run keeps them
    print(table(rows, a.target))


def write_results(out: Path, rows: list[dict], target: float) -> None:
    info = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "target_views_per_s": target,
            "command": shlex.join(["python", *sys.argv])}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")


def _with_range(row: dict, key: str) -> str:
    """``row[key]`` and, after several rounds, its range over them: ``12.3 (11.1-13.0)``."""
    digits = 0 if key == "loader_views_per_core_s" else 1
    text = f"{row[key]:.{digits}f}"
    rounds = row.get("loader_views_per_core_s_rounds") or []
    if len(rounds) > 1:
        lo, hi = (
            (min(rounds), max(rounds))
            if key == "loader_views_per_core_s"
            else row[f"{key}_min_max"]
        )
        text += f" ({lo:.{digits}f}-{hi:.{digits}f})"
    return text


def table(rows: list[dict], target: float) -> str:
    stages = list(rows[0]["stage_ms_per_view"]) if rows else []
    head = ["data (median width)", "augment", "loader views/s", "per core-s (range over rounds)",
            "loader, OpenCV default threads",
            f"cores for {target:.0f} views/s", "train views/s", "data wait",
            *[f"{s} ms/view" for s in stages]]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            f"{r['data']} ({r['median_width_px']:.0f} px)",
            r["augment"] + ("" if r.get("variant") in (None, "default") else f" ({r['variant']})"),
            f"{r['loader_views_per_s']:.0f}", _with_range(r, "loader_views_per_core_s"),
            "-" if r.get("loader_views_per_s_opencv_default_threads") is None
            else f"{r['loader_views_per_s_opencv_default_threads']:.0f}",
            _with_range(r, "cores_for_target"), f"{r['train_views_per_s']:.1f}",
            f"{r['data_wait']:.0%}", *[f"{r['stage_ms_per_view'][s]:.2f}" for s in stages],
        ]) + " |")  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
