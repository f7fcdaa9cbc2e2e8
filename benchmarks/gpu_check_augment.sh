#!/usr/bin/env bash
# Device check for the edit library: GPU-marked op tests, GPU-stage throughput of every
# pipeline, and train.py trainer=gpu with the isc1st pipeline (GPU stage on the device,
# paste ops drawing other training images through the data module).
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
echo "== gpu op tests"; timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_ops.py 2>&1 | tail -2
echo "== GPU stage throughput"; timeout 90 python3 benchmarks/bench_augment.py --gpu-only --out "$OUT/augment_gpu.json"
echo "== train.py trainer=gpu augment=isc1st"
timeout 200 python3 train.py trainer=gpu augment=isc1st model=resnet50 model.weights.source=none \
  trainer.max_epochs=2 batch_size=256 num_workers=14 eval_batch_size=256 \
  paths.data_dir=/tmp/data paths.output_dir=/tmp/outputs run_dir=/tmp/outputs/gpu_run 2>&1 \
  | tr '\r' '\n' | grep -vE "it/s\]$" | grep -E "Epoch|best|Error|error" | tail -8
cp /tmp/outputs/gpu_run/csv/version_0/metrics.csv "$OUT/gpu_train_isc1st_metrics.csv" 2>/dev/null
echo "== done"
