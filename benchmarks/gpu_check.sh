#!/usr/bin/env bash
# The device check, run on a lent GPU machine from the repo root (see benchmarks/README.md):
# GPU tests, model/search throughput, and train.py end to end with trainer=gpu (bf16).
# Missing pure-Python deps travel as wheels in .whl/ (not committed).
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm, pytorch_lightning as pl; print(torch.__version__, timm.__version__, pl.__version__)"
echo "== gpu tests"; timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_search.py 2>&1 | tail -3
echo "== throughput"; timeout 300 python3 benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.json" ${QUICK:+--quick}
echo "== train.py trainer=gpu"
timeout 240 python3 train.py trainer=gpu model=resnet50 model.weights.source=none \
  trainer.max_epochs=2 batch_size=256 num_workers=14 eval_batch_size=256 \
  paths.data_dir=/tmp/data paths.output_dir=/tmp/outputs run_dir=/tmp/outputs/gpu_run 2>&1 \
  | tr '\r' '\n' | grep -vE "it/s\]$" | tail -25
cp /tmp/outputs/gpu_run/csv/version_0/metrics.csv "$OUT/gpu_train_metrics.csv" 2>/dev/null
echo "== done"
