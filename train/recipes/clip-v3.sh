#!/usr/bin/env bash
# The shipped default (aiscan-clip-v1) and every measurement behind it: frozen CLIP
# ViT-B/16 features of train-v1 + train-v2 + train-v3, heads fitted on them, each scored
# leave-one-source-out (every held-out score from a head that never saw the source).
# Rerun to resume: extraction continues where it stopped, finished reports are skipped.
# Usage: bash train/recipes/clip-v3.sh [RUNS_DIR]
#   AISCAN_DATA: folder with train-v1 and train-v2 (default ../shared/data)
#   AISCAN_V3: the rebuilt train-v3 originals (see ../shared/data/train-v3/README.md)
#
# 1. features, once per image and view (hours on 2 cores, resumable);
# 2. heads on the protocol: feature set, head kind, L2 strength, views, balance, data;
# 3. the shipped head: fitted on everything, its bands from the protocol's held-out
#    scores, exported (aiscan-export --clip-head).
set -euo pipefail
runs=${1:-runs}
data=$(cd "${AISCAN_DATA:-../shared/data}" && pwd)
v3=${AISCAN_V3:?set AISCAN_V3 to the rebuilt train-v3 folder}
dirs=("$data/train-v1" "$data/train-v2" "$v3")
feats=$runs/clip-features

# -- 1. features --------------------------------------------------------------------------
for view in base jpeg; do  # flip, crop, blur: extractable, not measured yet
  aiscan-protocol features "${dirs[@]}" --out "$feats" --views "$view"
done

# -- 2. heads on the protocol ---------------------------------------------------------------
# Leave-one-source-out (51 label/source groups) for the cheap feature sets; 10
# source-grouped folds (same folds for every run) where 51 fits of 9,216 features would
# take too long on 2 cores. Each lever is changed alone against its baseline.
heads() {  # heads NAME DATA... [options]
  local name=$1; shift
  [ -f "$runs/clip-heads/$name.json" ] && return
  aiscan-protocol heads "$@" --features "$feats" --out "$runs/clip-heads/$name.json"
}
v12=("$data/train-v1" "$data/train-v2")
# feature set, leave one source out (linear probe, C = 0.001, sources balanced)
heads lin-embeds "${dirs[@]}" --on embeds
heads lin-cls11 "${dirs[@]}" --on cls:11
heads lin-cls-8-11 "${dirs[@]}" --on cls:8,9,10,11
heads lin-cls-4-11 "${dirs[@]}" --on cls:4,5,6,7,8,9,10,11
# 10 folds: the wider feature sets, L2 strength, head kind, views, balance, data
heads g10-lin-cls-8-11 "${dirs[@]}" --on cls:8,9,10,11 --groups 10
heads g10-lin-cls-4-11 "${dirs[@]}" --on cls:4,5,6,7,8,9,10,11 --groups 10
heads g10-lin-cls-all "${dirs[@]}" --on cls:all --groups 10
heads g10-lin-cls-all-c0.0003 "${dirs[@]}" --on cls:all --groups 10 --c 0.0003
heads g10-lin-cls-all-c0.003 "${dirs[@]}" --on cls:all --groups 10 --c 0.003
heads g10-mlp-cls-all "${dirs[@]}" --on cls:all --groups 10 --head mlp --hidden 128 --epochs 10
heads g10-lin-cls-all-jpeg "${dirs[@]}" --on cls:all --groups 10 --views base,jpeg
heads g10-lin-cls-all-class "${dirs[@]}" --on cls:all --groups 10 --balance class
# train-v3 scored but never trained on: the same images, the same folds
heads g10-lin-cls-all-no-v3 "${v12[@]}" --score-only "$v3" --on cls:all --groups 10
heads g10-lin-cls-all-no-v3-jpeg "${v12[@]}" --score-only "$v3" --on cls:all --groups 10 \
  --views base,jpeg
heads g10-lin-cls-all-no-v3-c0.0003 "${v12[@]}" --score-only "$v3" --on cls:all --groups 10 \
  --c 0.0003
# train-v3 in part: its AI side only; without PACS and the receipts
v3real=(); for s in sroie-receipts pacs memegen immich-test-assets declan-wright-dataset \
  cartridgeocr exifr opensfm apdrawinggan photomaker; do v3real+=(--score-only-source "real/$s"); done
heads g10-lin-cls-all-v3ai-c0.0003 "${dirs[@]}" "${v3real[@]}" --on cls:all --groups 10 --c 0.0003
heads g10-lin-cls-all-v3-nopacs-c0.0003 "${dirs[@]}" --score-only-source pacs \
  --score-only-source sroie-receipts --on cls:all --groups 10 --c 0.0003
# the fast model's own protocol (2 source-grouped folds of train-v1 + v2), for comparison
heads v12-g2-lin-cls-all "${v12[@]}" --on cls:all --groups 2
python train/recipes/clip_table.py "$runs/clip-heads"

# -- 3. the shipped head ------------------------------------------------------------------
aiscan-export --clip-head "$runs/clip-heads/g10-lin-cls-all-no-v3-c0.0003.json" --out "$runs/clip-b16-head.onnx" --fpr 0.05 --miss 0.10
python train/recipes/clip_card.py "$runs/clip-b16-head.onnx"
