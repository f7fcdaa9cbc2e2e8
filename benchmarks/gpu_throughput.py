"""GPU figures for the spine: training-step and extraction throughput of the recipe backbones,
and exact search at DISC21 scale. Prints a table and writes JSON (``--out``).

    python benchmarks/gpu_throughput.py --out gpu.json

Synthetic inputs (random pixels, random unit descriptors): this measures the model and search
code, not the data pipeline.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss
from fisc.models.descriptor import ModelConfig, build_descriptor_model
from fisc.search.exact import global_capped_search


def _sync():
    torch.cuda.synchronize()


def _model(name: str, kwargs) -> torch.nn.Module:
    pooling = "cls" if name.startswith("vit") else "gem"
    return build_descriptor_model(
        ModelConfig(name=name, pooling=pooling, model_kwargs=kwargs or {})
    )


def train_throughput(name: str, size: int, images: int, steps: int, kwargs=None) -> float:
    model = _model(name, kwargs).cuda()
    model = model.to(memory_format=torch.channels_last)
    loss_fn = InfoNCEKoLeoLoss(0.05, 10.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(2 * images, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    ids = torch.arange(images, device="cuda").repeat(2)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            emb = model(x)
        out = loss_fn(emb.float(), ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return 2 * images * steps / (time.perf_counter() - t)  # views per second


@torch.inference_mode()
def extract_throughput(name: str, size: int, batch: int, steps: int, kwargs=None) -> float:
    model = _model(name, kwargs).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x).float().cpu()
    _sync()
    return batch * steps / (time.perf_counter() - t)


def search_time(n_q: int, n_r: int, d: int) -> dict:
    rng = np.random.default_rng(0)
    r = rng.standard_normal((n_r, d), dtype=np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    q = rng.standard_normal((n_q, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[: n_q // 5] = r[: n_q // 5] + 0.05 * q[: n_q // 5]  # 20% planted copies
    t = time.perf_counter()
    qi, ri, d2 = global_capped_search(q, r, cap=10 * n_q, backend="torch", device="cuda")
    elapsed = time.perf_counter() - t
    planted = int(np.sum((qi < n_q // 5) & (ri == qi)))
    return {
        "n_q": n_q,
        "n_r": n_r,
        "d": d,
        "seconds": elapsed,
        "pairs": int(qi.size),
        "planted_found": planted,
        "planted": n_q // 5,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_throughput.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    steps = 3 if args.quick else 10
    res = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "train": [],
        "extract": [],
    }
    vit = {"dynamic_img_size": True}
    for name, size, imgs, kw in [
        ("resnet50", 224, 128, None),
        ("tf_efficientnetv2_m", 256, 64, None),
        ("vit_base_patch16_224", 224, 128, vit),
    ]:
        v = train_throughput(name, size, imgs, steps, kw)
        res["train"].append(
            {"model": name, "size": size, "batch_views": 2 * imgs, "views_per_s": v}
        )
        print(f"train  {name:24s} {size}px  batch {2 * imgs} views: {v:8.0f} views/s", flush=True)
    for name, size, kw in [
        ("resnet50", 288, None),
        ("tf_efficientnetv2_m", 384, None),
        ("vit_base_patch16_224", 224, vit),
    ]:
        v = extract_throughput(name, size, 256, steps, kw)
        res["extract"].append({"model": name, "size": size, "images_per_s": v})
        print(f"extract {name:24s} {size}px batch 256: {v:8.0f} img/s", flush=True)
    res["search"] = search_time(5_000 if args.quick else 50_000, 1_000_000, 256)
    s = res["search"]
    print(
        f"search {s['n_q']} x {s['n_r']} x {s['d']} global cap {s['pairs']}: {s['seconds']:.2f} s "
        f"(planted copies found {s['planted_found']}/{s['planted']})",
        flush=True,
    )
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
