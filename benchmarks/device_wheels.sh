#!/usr/bin/env bash
# Writes .whl/ (git-excluded): wheels of the Python packages fisc needs that the lent H200
# machine's image lacks (its package list in the tool library's device/KINDS.md, read
# 2026-11-17: torch, timm, Lightning, OpenCV, Pillow, scikit-image, h5py, safetensors and tqdm
# are there), at the versions installed in .venv, for that machine's CPython 3.12 on
# manylinux x86_64. A package with no such wheel (antlr4-python3-runtime 4.9.3: source only)
# is built here as a pure-Python wheel. faiss-cpu (18 MB) is left out to stay under the
# carry limit: without it search's `auto` backend is torch. benchmarks/device_env.sh installs
# them there:
#   bash benchmarks/device_wheels.sh      # once per machine, before the lent session's run
#   run: command "bash benchmarks/gpu_session.sh", carry [".whl"]
# The working tree and .whl travel together under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .git/info && { grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude; }
PKGS="antlr4-python3-runtime omegaconf hydra-core kornia kornia-rs imagehash pywavelets
augly iopath python-magic platformdirs wandb pydantic pydantic-core annotated-types
typing-inspection sniffio"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
rm -rf .whl && mkdir .whl
for p in $PKGS; do
  v=$($PY -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$p")
  # shellcheck disable=SC2086
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS -d .whl "$p==$v" 2>/dev/null || $PY -m pip wheel -q --no-deps -w .whl "$p==$v"
done
ls .whl
whl=$(du -sk .whl | cut -f1)
tree=$(git ls-files -z | du -ck --files0-from=- | tail -1 | cut -f1)
echo ".whl: $((whl / 1024)) MiB, tracked files: $((tree / 1024)) MiB (limit 64 MiB together)"
if [ $((whl + tree)) -gt $((64 * 1024)) ]; then echo "too large to carry" >&2; exit 1; fi
if [ $((whl + tree)) -gt $((60 * 1024)) ]; then echo "close to the limit: carry nothing else"; fi
