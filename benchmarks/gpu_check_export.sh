#!/usr/bin/env bash
# Device check for exports (run on a lent GPU machine from the repo root): how far apart
# descriptors are on the GPU (reruns, deterministic or not, batch vs single, GPU vs CPU).
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 400 python3 benchmarks/export_determinism.py --device cuda --out "$OUT/export_determinism.json"
echo "== done"
