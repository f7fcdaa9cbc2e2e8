"""``make bench-augment``: images/s of every edit op and every pipeline at 224 px, on one CPU
core and on all cores, beside an AugLy chain doing the same edit mix, and on the GPU when one
is present. Prints a table and writes JSON (``--out``).

Side by side in one run: fisc's ``disc_full`` chain restricted to the ops that have an AugLy
equivalent, and AugLy's functions on the very same op draws (same images, same op choices).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from fisc.augment.ops import OPS
from fisc.augment.pipeline import AugmentConfig, Stage
from fisc.data.procedural import procedural_image

SIZE = 224
CONF = Path(__file__).resolve().parent.parent / "conf" / "augment"


def sources(n: int = 32) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = procedural_image(np.random.default_rng([7, i]), SIZE, SIZE)
        out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return out


def other_provider(imgs):
    return lambda rng: imgs[int(rng.integers(len(imgs)))]


def rate(fn, imgs, seconds: float) -> float:
    """Images per second of ``fn(img, rng)`` over the images, for about ``seconds``."""
    n, start = 0, time.perf_counter()
    while True:
        for i, img in enumerate(imgs):
            fn(img, np.random.default_rng([n, i]))
            n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def load_pipeline(name: str) -> AugmentConfig:
    raw = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    return AugmentConfig(**raw)


def pipeline_fn(cfg: AugmentConfig, imgs):
    from fisc.augment.gpu import build_gpu_pipeline

    views = cfg.build(SIZE)
    gpus = [build_gpu_pipeline(v.view.gpu) if v.view.gpu else None for v in views]
    other = other_provider(imgs)

    def fn(img, rng):  # both views, GPU stage per sample on CPU, as in DataLoader workers
        for view, gpu in zip(views[:2], gpus[:2], strict=True):
            pixels, seed = view(img, rng, other)
            if gpu is not None:
                with torch.no_grad():
                    gpu(
                        torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255,
                        torch.tensor([seed]),
                    )

    return fn


def _worker_rate(args):
    name, seconds, n_src = args
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    imgs = sources(n_src)
    return rate(pipeline_fn(load_pipeline(name), imgs), imgs, seconds) * 2  # views


def all_cores(name: str, seconds: float, n_src: int) -> float:
    procs = os.cpu_count() or 1
    with get_context("spawn").Pool(procs) as pool:
        return sum(pool.map(_worker_rate, [(name, seconds, n_src)] * procs))


def augly_comparison(imgs, seconds: float) -> dict:
    """The disc_full chain over the ops AugLy also has: fisc vs AugLy on the same draws."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from augly_equivalents import AUGLY_EQUIVALENTS

    cfg = load_pipeline("disc_full").views[0]["stages"][1]
    shared = {k: v for k, v in cfg["ops"].items() if k in AUGLY_EQUIVALENTS}
    stage = Stage.from_config({**cfg, "ops": shared}, "bench")
    names = [op.name for op in stage.ops]
    weights = np.array([op.p for op in stage.ops]) / sum(op.p for op in stage.ops)
    other = other_provider(imgs)
    pil = [Image.fromarray(i) for i in imgs]

    def draws(rng):
        k = int(rng.integers(1, 5))
        return rng.choice(len(names), size=k, replace=False, p=weights)

    def fisc_chain(img, rng):
        for j in draws(rng):
            img = stage.ops[j].edit(img, rng, other)

    def augly_chain(img, rng):
        p = pil[int(rng.integers(len(pil)))]
        for j in draws(rng):
            p = AUGLY_EQUIVALENTS[names[j]](p, rng)
        np.asarray(p.convert("RGB"))

    fisc_rate = rate(fisc_chain, imgs, seconds)
    augly_rate = rate(augly_chain, imgs, seconds)
    return {
        "ops": names,
        "fisc_img_s": fisc_rate,
        "augly_img_s": augly_rate,
        "ratio": fisc_rate / augly_rate,
    }


def gpu_rates(pipelines, batch: int = 256) -> dict:
    from fisc.augment.gpu import build_gpu_pipeline

    out = {}
    x = torch.rand(batch, 3, SIZE, SIZE, device="cuda")
    seeds = torch.arange(batch)
    for name in pipelines:
        cfg = load_pipeline(name)
        gpu_cfg = next((v.get("gpu") for v in cfg.views if v.get("gpu")), None)
        if not gpu_cfg:
            continue
        pipe = build_gpu_pipeline(gpu_cfg)
        for _ in range(3):
            pipe(x, seeds)
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            pipe(x, seeds + n)
            n += batch
        torch.cuda.synchronize()
        out[name] = n / (time.perf_counter() - start)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--out", default="benchmarks/results/augment_cpu.json")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU stages")
    args = parser.parse_args()
    if args.gpu_only:
        names = sorted(p.stem for p in CONF.glob("*.yaml"))
        result = {
            "device": torch.cuda.get_device_name(),
            "size": SIZE,
            "batch": 256,
            "gpu": gpu_rates(names),
        }
        for name, r in result["gpu"].items():
            print(f"  GPU stage of {name}: {r:.0f} img/s at {SIZE} px, batch 256")
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    imgs = sources()
    other = other_provider(imgs)
    result = {
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "size": SIZE,
        "ops": {},
        "pipelines": {},
    }
    print(f"{'op (level 0.6)':28s} img/s (1 core, {SIZE} px)")
    for name in sorted(OPS):
        op = OPS[name].at(0.6)
        result["ops"][name] = rate(lambda img, rng, op=op: op(img, rng, other), imgs, args.seconds)
        print(f"  {name:26s} {result['ops'][name]:8.0f}")
    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    print(f"\n{'pipeline (2 views)':28s} views/s 1 core | all {os.cpu_count()} cores")
    for name in names:
        one = rate(pipeline_fn(load_pipeline(name), imgs), imgs, args.seconds) * 2
        many = all_cores(name, args.seconds, 16)
        result["pipelines"][name] = {"one_core": one, "all_cores": many}
        print(f"  {name:26s} {one:8.0f} | {many:8.0f}")
    cmp = augly_comparison(imgs, 3 * args.seconds)
    result["augly"] = cmp
    print(f"\ndisc_full chain over the {len(cmp['ops'])} ops AugLy also has, same draws, 1 core:")
    print(
        f"  fisc {cmp['fisc_img_s']:.0f} img/s | AugLy {cmp['augly_img_s']:.0f} img/s | "
        f"ratio {cmp['ratio']:.2f}x (goal >= 3x)"
    )
    if torch.cuda.is_available():
        result["gpu"] = gpu_rates(names)
        for name, r in result["gpu"].items():
            print(f"  GPU stage of {name}: {r:.0f} img/s ({torch.cuda.get_device_name()})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
