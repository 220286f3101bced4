#!/usr/bin/env bash
# The shipped default model and every measurement behind its recipe, on ../shared/data
# (train-v1 + train-v2). Rerun to resume: finished steps are skipped, training resumes
# from its last epoch checkpoint.
# Usage: bash train/recipes/train-v2.sh [RUNS_DIR]
#
# 1. frozen-feature probes (screening, minutes each): backbones and resize policies,
#    logistic regressions held out by source-grouped folds;
# 2. fine-tuning recipes on 2 source-grouped folds, held-out sources scored every epoch;
# 3. the shipped model: the chosen recipe on the stratified split of all sources, exported
#    with the protocol's summary in its metadata, evaluated on its test split;
# 4. the model card's tables.
set -euo pipefail
runs=${1:-runs}
data=$(cd "${AISCAN_DATA:-../shared/data}" && pwd)
dirs=("$data/train-v1" "$data/train-v2")
w=$runs/weights
bash train/recipes/weights.sh "$w"

# -- 1. frozen-feature probes ------------------------------------------------------------
probe() {  # probe ARCH INIT RESIZE [options]
  local arch=$1 init=$2 resize=$3; shift 3
  [ -f "$runs/probes/probe_${arch}_${resize}_2.json" ] && return
  aiscan-protocol probe "${dirs[@]}" --arch "$arch" --init "$init" --resize "$resize" \
    --groups 2 --out "$runs/probes" "$@"
}
probe tf_efficientnet_lite0 "$w/lite0.pth" squash
probe tf_efficientnet_lite0 "$w/lite0.pth" crop
probe efficientnet_b0 "$w/b0.pth" crop --norm imagenet
probe tf_efficientnet_lite1 "$w/lite1.pth" crop
probe tf_efficientnet_lite2 "$w/lite2.pth" crop

# -- 2. fine-tuning recipes, 2 source-grouped folds --------------------------------------
folds() { AISCAN_DATA=$data bash train/recipes/folds.sh "$runs" "$@"; }
ROBUST=(--epochs 2 --resize crop --crop-scale 0.8 --head-init small --lr 1e-3
  --body-lr-scale 0.1 --balance source --degrade 0.5)
folds ft-lite0-robust 2 --arch tf_efficientnet_lite0 --init "$w/lite0.pth" "${ROBUST[@]}"
folds ft-b0-robust 2 --arch efficientnet_b0 --init "$w/b0.pth" --norm imagenet "${ROBUST[@]}"
folds ft-lite0-squash 2 --arch tf_efficientnet_lite0 --init "$w/lite0.pth" --epochs 2
for f in "$runs"/ft-*; do
  [ -f "$f/protocol_3crop.json" ] || ! grep -q '"resize": "crop"' "$f/fold1/config.json" ||
    aiscan-protocol folds "$f"/fold* --column p_ai_3crop --out "$f/protocol_3crop.json"
done
