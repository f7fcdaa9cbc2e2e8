#!/usr/bin/env bash
# The GPU quality run of the generalisation issue, on a lent GPU machine from the repo root:
# a 50k-image minidisc, the best recipe at 224 px for at most 8 minutes of training, every split
# scored next to pHash (the demo recipe without its CPU determinism switch). Results land in
# $OUT (copy them to experiments/gpu/ and commit).
# Tested at a tiny size on CPU by tests/test_curves.py (quality.py --tiny).
source "$(dirname "$0")/../../benchmarks/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 840 python3 experiments/gpu/quality.py --minutes ${MINUTES:-8} --n-train ${N_TRAIN:-50000} \
  --data-dir /tmp/data --out /tmp/outputs --results "$OUT" -- deterministic=false "$@" 2>&1 \
  | tr '\r' '\n' | grep -vE "it/s\]$|s/it\]$|batch/s\]$|img/s\]$" | tail -40
echo "== done"
