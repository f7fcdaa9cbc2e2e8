"""How far apart descriptors can be on a device: the tolerance a GPU export must allow.

For each backbone (random weights, synthetic images at the recipe's eval size) it prints and
writes, as max |a - b| over unit-norm descriptors:

- ``rerun``: the same batch twice, deterministic kernels on (see fisc.determinism);
- ``rerun_fast``: the same batch twice, cudnn.benchmark on and TF32 allowed (no determinism);
- ``batch_vs_single``: the batch at once vs one image per forward pass (deterministic);
- ``device_vs_cpu``: deterministic device output vs the CPU, one image at a time.

On this repo's 2-core CPU (mobilenetv2, resnet50) reruns gave 0 and batch vs single ~2e-7,
which is why exports run one image per pass. The GPU figures (a lent H200, 2026-11-30) are in
the README's "GPU tolerance" and benchmarks/results/h200_export_determinism_2026-11-30.json.
Run: python benchmarks/export_determinism.py
[--device cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from fisc.determinism import deterministic_kernels
from fisc.models.descriptor import ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig

BACKBONES = {  # name, pooling, eval size, extra timm kwargs
    "resnet50": ("resnet50", "gem", 288, {}),
    "vit_b": ("vit_base_patch16_224", "cls", 224, {}),
    "effnetv2_m": ("tf_efficientnetv2_m", "gem", 384, {}),
    "mobilenetv2": ("mobilenetv2_100", "gem", 128, {}),
}


def _run(model, x, per_image=False):
    with torch.inference_mode():
        if per_image:
            return torch.cat([model(x[i : i + 1]) for i in range(len(x))]).float().cpu()
        return model(x).float().cpu()


def _diff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def measure(key: str, device: str, batch: int) -> dict:
    name, pooling, size, kwargs = BACKBONES[key]
    torch.manual_seed(0)
    cfg = ModelConfig(
        name=name,
        pooling=pooling,
        eval_size=size,
        model_kwargs=kwargs,
        weights=WeightsConfig(source="none"),
    )
    cpu_model = build_descriptor_model(cfg).eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    model = build_descriptor_model(cfg).eval()
    model.load_state_dict(cpu_model.state_dict())
    model.to(device)
    xd = x.to(device)
    row = {"backbone": name, "size": size, "batch": batch, "device": device}
    with deterministic_kernels():
        a, b = _run(model, xd), _run(model, xd)
        single = _run(model, xd, per_image=True)
        row["rerun"] = _diff(a, b)
        row["batch_vs_single"] = _diff(a, single)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    a, b = _run(model, xd), _run(model, xd)
    row["rerun_fast"] = _diff(a, b)
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    if device != "cpu":
        cpu = _run(cpu_model, x, per_image=True)
        row["device_vs_cpu"] = _diff(single, cpu)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbones", nargs="*", default=list(BACKBONES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    for key in args.backbones:
        row = measure(key, args.device, args.batch)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
