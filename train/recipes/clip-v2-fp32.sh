#!/usr/bin/env bash
# The shipped default since aiscan-clip-v2: the head of aiscan-clip-v1's recipe, fitted on
# the fp32 encoder graph's features, which are the same on every CPU (and GPU), where
# the int8 graph's are not (its u8s8 kernels saturate without VNNI: see encoder_precision
# in scanner/core/models.py and benchmarks/results/clip_precision_*.json).
# Rerun to resume: extraction continues where it stopped, finished reports are skipped.
# Usage: bash train/recipes/clip-v2-fp32.sh [RUNS_DIR]
#   AISCAN_DATA: folder with train-v1 and train-v2 (default ../shared/data)
set -euo pipefail
runs=${1:-runs}
data=$(cd "${AISCAN_DATA:-../shared/data}" && pwd)
v12=("$data/train-v1" "$data/train-v2")
feats=$runs/clip-features-fp32

# 1. features of the fp32 graph (about 1.5 hours on 2 cores; resumable)
aiscan-protocol features "${v12[@]}" --out "$feats" --views base --precision fp32

# 2. heads on the protocol: the int8 card's comparison (2 folds) and the shipped levers
heads() {  # heads NAME [options]
  local name=$1; shift
  [ -f "$runs/clip-heads-fp32/$name.json" ] && return
  aiscan-protocol heads "${v12[@]}" --features "$feats" --on cls:all "$@" \
    --out "$runs/clip-heads-fp32/$name.json"
}
heads v12-g2-fp32-lin-cls-all --groups 2
heads g10-fp32-lin-cls-all-c0.0003 --groups 10 --c 0.0003
heads g10-fp32-lin-cls-all --groups 10
python train/recipes/clip_table.py "$runs/clip-heads-fp32"

# 3. the shipped head: fitted on all of train-v1 + v2, bands from the held-out scores
aiscan-export --clip-head "$runs/clip-heads-fp32/g10-fp32-lin-cls-all-c0.0003.json" \
  --out "$runs/clip-b16-head.onnx" --model-id aiscan-clip-v2 --fpr 0.05 --miss 0.10
python train/recipes/clip_card.py "$runs/clip-b16-head.onnx"
