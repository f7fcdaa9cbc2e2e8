#!/usr/bin/env bash
# What a session with a lent GPU runs, in one call of under 10 minutes, in the order of value
# (each part under its own time limit, so a slow part cannot starve the next):
#   1. make bench-train on the GPU: ResNet-50 at 224 px (random weights), batch 256, on the
#      DISC21-like folder, pipelines disc_full then basic, all cores but two as loader workers,
#      with trainer=gpu's data settings (augment.work_side=1, data.decode_min_side = the train
#      size: the settings for feeding a GPU; each row of train_gpu.json records them). The H200
#      rows of 2026-11-30 were taken when trainer=gpu still left work_side null and decoded
#      down to twice the train size, before the faster decode and shrink;
#   2. the GPU quality run of the generalisation issue (experiments/gpu/quality.py): the demo
#      recipe at 224 px on a 50k-image minidisc for MINUTES of training, every split scored;
#   3. the export's GPU tolerance (benchmarks/export_determinism.py --device cuda);
#   scaling (optional, after part 1, which builds /tmp/disc21like): benchmarks/loader_overhead.py
#      on that folder with trainer=gpu's data settings: views/s per worker with 1 worker and with
#      all workers but two, side by side, to tell whether the loader stops scaling at the
#      machine's physical cores (the H200 run of 2026-11-30 stopped past 8 of 16 workers).
# PARTS picks them (default "bench quality": the export tolerance was recorded on 2026-11-30);
# e.g. PARTS="bench scaling quality" with QUALITY_S lowered to stay within one 10-minute call.
# Before it, on the machine that calls `run`: bash benchmarks/device_wheels.sh (writes .whl/).
# Results land in $OUT: train_gpu.json, loader_scaling.json, the quality JSON,
# export_determinism.json, session.log.
# Copy them to benchmarks/results/ and experiments/gpu/ and commit them.
source "$(dirname "$0")/device_env.sh"
exec > >(tee "$OUT/session.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
lscpu | grep -E "^(Model name|Socket|Core|Thread|CPU\(s\))" || true
python3 -c "import os, torch, timm, pytorch_lightning as pl; print(torch.__version__, timm.__version__, pl.__version__, os.cpu_count(), 'cores')"
WORKERS=$(($(nproc) - 2))
BARS='it/s\]$|s/it\]$|batch/s\]$|img/s\]$'
PARTS=${PARTS:-bench quality}
if [[ " $PARTS " == *" bench "* ]]; then
echo "== 1. bench-train (GPU), $(date +%T)"
timeout "${BENCH_S:-250}" python3 benchmarks/bench_train.py --data disc21like --augment disc_full basic \
  --workers "$WORKERS" --device cuda --steps 32 --warmup 10 --no-opencv-ab \
  --disc21like-dir /tmp/disc21like --out "$OUT/train_gpu.json" -- model=resnet50 \
  model.weights.source=none model.train_size=224 model.eval_size=224 trainer=gpu batch_size=256 \
  2>&1 | tr '\r' '\n' | grep -vE "$BARS"
fi
if [[ " $PARTS " == *" scaling "* ]]; then
echo "== scaling: loader views/s per worker, 1 vs $WORKERS workers, $(date +%T)"
timeout "${SCALING_S:-120}" python3 benchmarks/loader_overhead.py --data /tmp/disc21like \
  --size 224 --workers "$WORKERS" --rounds 3 --batches 8 --out "$OUT/loader_scaling.json" -- \
  trainer=gpu batch_size=256 2>&1 | tail -12
fi
if [[ " $PARTS " == *" quality "* ]]; then
echo "== 2. quality run, ${MINUTES:=3} min of training, $(date +%T)"
timeout "${QUALITY_S:-300}" python3 experiments/gpu/quality.py --recipe demo --minutes "$MINUTES" \
  --epochs "${EPOCHS:-4}" --n-train "${N_TRAIN:-50000}" --workers "$WORKERS" --data-dir /tmp/data \
  --out /tmp/outputs --results "$OUT" -- deterministic=false 2>&1 | tr '\r' '\n' | grep -vE "$BARS" \
  | grep -vE "^\s*$" | tail -40
fi
if [[ " $PARTS " == *" export "* ]]; then
echo "== 3. export tolerance, $(date +%T)"
timeout "${EXPORT_S:-80}" python3 benchmarks/export_determinism.py --device cuda \
  --out "$OUT/export_determinism.json" 2>&1 | tail -30
fi
echo "== done $(date +%T)"
