#!/usr/bin/env bash
# The GPU check: install what was carried, run the gpu-marked tests, time DALI decode,
# CUDA inference and the full scan, print one table. Under 8 minutes on one GPU.
#
#   bash benchmarks/gpu/check.sh          # on the GPU machine, after prepare.sh's parts
#   bash benchmarks/gpu/check.sh --cpu    # rehearsal here: current env, CPU, DALI CPU mode
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-gpu}
out=${OUT:-/tmp/aiscan-gpu-out}
mkdir -p "$out"
start=$(date +%s)
log() { echo "[$(( $(date +%s) - start ))s] $*"; }

if [ "$mode" = "gpu" ]; then
  log "reassembling $(ls -d gpu-carry/part-* | wc -l) carried parts"
  stage=/tmp/aiscan-carry && rm -rf "$stage" && mkdir -p "$stage"
  cat gpu-carry/part-*/data | tar -C "$stage" -xf -
  python3 -m venv --system-site-packages /tmp/aiscan-venv
  # shellcheck disable=SC1091
  . /tmp/aiscan-venv/bin/activate
  pip install -q --no-index --find-links "$stage/wheelhouse" ".[dali]" rich pytest
  model="$stage/model.onnx"
  [ -f "$model" ] || model=scanner/models/fast.onnx
  device=cuda decoder=dali images_small=1024 images_big=128 batch=256
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
else
  model=${MODEL:-bench-models/b0-untrained.onnx}
  device=cpu decoder=dali images_small=16 images_big=4 batch=16
fi
python - <<'PY' | tee "$out/providers.txt"
import onnxruntime as ort, nvidia.dali as dali
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("dali", dali.__version__)
PY

log "gpu-marked tests"
AISCAN_TEST_MODEL="$model" python -m pytest -q -m gpu tests -p no:cacheprovider \
  2>&1 | tail -15 | tee "$out/tests.txt" || true

log "throughput: $decoder decode, $device inference, batch $batch"
aiscan-bench --model "$model" --device "$device" --decoder "$decoder" \
  --corpus 1024px,12mp --images "$images_small,$images_big" --batch-size "$batch" \
  --repeats 3 --baselines ort --cache-dir /tmp/aiscan-bench-data --results-dir "$out" \
  2>&1 | tail -40
log "done; results in $out"
