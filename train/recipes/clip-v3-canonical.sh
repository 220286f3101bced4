#!/usr/bin/env bash
# The shipped default since aiscan-clip-v3: every image in one pixel regime (the canonical
# copy: fit in 256 px, JPEG q85, as train-v1/v2's copies were made), CLIP ViT-B/16 features
# of the fp32 graph (the same on every CPU kind; the int8rr graph's differ, see
# docs/performance.md), a linear head on the class tokens of all 12 blocks, fitted on the
# originals of train-v1 to train-v4; every decision taken on held-out sources scored as
# originals. The levers were measured on int8rr features (faster to extract).
#
# Rerun to resume: extraction continues where it stopped, finished reports are skipped.
# Usage: bash train/recipes/clip-v3-canonical.sh [RUNS_DIR]
#   AISCAN_ORIGINALS: folder with train-v1-orig, train-v2-orig, train-v3-orig, train-v4-orig
#     (built by ../shared/data/build_from_mirror.py from each manifest: originals.csv for
#     v1/v2, manifest.csv for v3/v4) and v12-tiles (the copies of the four v1/v2 sources
#     that have no originals: sd-cheatsheet-tiles, sd-artists-to-study, stylegan-zoo-tiles,
#     sd2-samples, under ai/). train-v4 has real images only: it needs an empty ai/ folder.
set -euo pipefail
runs=${1:-runs}
o=$(cd "${AISCAN_ORIGINALS:?set AISCAN_ORIGINALS to the rebuilt originals}" && pwd)
v12=("$o/train-v1-orig" "$o/train-v2-orig" "$o/v12-tiles")
v34=("$o/train-v3-orig" "$o/train-v4-orig")

# -- 1. features: the canonical regime (and the native one, for the lever table) ------------
feats() {  # feats PRECISION PIXELS DATA...
  local precision=$1 pixels=$2; shift 2
  aiscan-protocol features "$@" --out "$runs/feats/$precision-$pixels" \
    --precision "$precision" --pixels "$pixels"
}
feats int8rr canonical "${v12[@]}" "${v34[@]}"   # ~35 min on 2 cores (graph 3: one image per run)
feats int8rr native "${v12[@]}"                  # ~45 min (originals decoded at size)
feats int8mix canonical "${v12[@]}"              # the precision comparison (issue 27)
feats fp32 canonical "${v12[@]}" "${v34[@]}"     # ~60 min: the shipped head's features

# -- 2. heads on the protocol: every candidate scores the same images (v1-v4 originals) -----
heads() {  # heads NAME FEATURES DATA... [options]
  local name=$1 cache=$2; shift 2
  [ -f "$runs/heads/$name.json" ] && return
  aiscan-protocol heads "$@" --features "$runs/feats/$cache" --on cls:all --groups 10 \
    --out "$runs/heads/$name.json"
}
c=(--c 0.0003)
# pixel regime, on train-v1 + v2 (10 source-grouped folds)
heads regime-canonical int8rr-canonical "${v12[@]}" "${c[@]}"
heads regime-native int8rr-native "${v12[@]}" "${c[@]}"
heads regime-native+canonical int8rr-native "${v12[@]}" "${c[@]}" \
  --also-features "$runs/feats/int8rr-canonical"
heads regime-canonical+native int8rr-canonical "${v12[@]}" "${c[@]}" \
  --also-features "$runs/feats/int8rr-native"
# the encoder graph, on train-v1 + v2 in the canonical regime
heads graph-int8mix int8mix-canonical "${v12[@]}" "${c[@]}"
heads graph-fp32 fp32-canonical "${v12[@]}" "${c[@]}"
# data, scored on v1-v4 alike (what a mix does not train on, it scores)
v3real=(); for s in sroie-receipts pacs memegen immich-test-assets declan-wright-dataset \
  cartridgeocr exifr opensfm apdrawinggan photomaker; do v3real+=(--score-only-source "real/$s"); done
heads data-v12 int8rr-canonical "${v12[@]}" --score-only "$o/train-v3-orig" \
  --score-only "$o/train-v4-orig" "${c[@]}"
heads data-v1234 int8rr-canonical "${v12[@]}" "${v34[@]}" "${c[@]}"
heads data-v12-v3ai-v4 int8rr-canonical "${v12[@]}" "${v34[@]}" "${v3real[@]}" "${c[@]}"
heads data-v123 int8rr-canonical "${v12[@]}" "$o/train-v3-orig" \
  --score-only "$o/train-v4-orig" "${c[@]}"
heads data-v124 int8rr-canonical "${v12[@]}" "$o/train-v4-orig" \
  --score-only "$o/train-v3-orig" "${c[@]}"
# L2 strength on the chosen mix
heads data-v1234-c0.0001 int8rr-canonical "${v12[@]}" "${v34[@]}" --c 0.0001
heads data-v1234-c0.001 int8rr-canonical "${v12[@]}" "${v34[@]}" --c 0.001
heads data-v1234-c0.003 int8rr-canonical "${v12[@]}" "${v34[@]}" --c 0.003
heads data-v1234-balance-class int8rr-canonical "${v12[@]}" "${v34[@]}" --c 0.0003 --balance class

# the shipped graph: fp32 on the chosen mix, at three strengths
heads fp32-v1234-c0.0003 fp32-canonical "${v12[@]}" "${v34[@]}" --c 0.0003
heads fp32-v1234-c0.001 fp32-canonical "${v12[@]}" "${v34[@]}" --c 0.001
heads fp32-v1234-c0.003 fp32-canonical "${v12[@]}" "${v34[@]}" --c 0.003

# -- 3. the shipped head: the lever table, the head fitted on every image, its card -------
r=$runs/heads
python "$(dirname "$0")/levers.py" "$runs/levers.json" \
  "pixels: native (originals as sent), v1+v2=$r/regime-native.json=rejected: 0.069 AUC below the canonical copy" \
  "pixels: canonical copy (fit 256, JPEG q85), v1+v2=$r/regime-canonical.json=chosen: one pixel regime from training set to queue" \
  "pixels: canonical, native rows added in training, v1+v2=$r/regime-canonical+native.json=rejected: below canonical alone" \
  "graph: int8mix (fc2 of blocks 6-8 in float), v1+v2=$r/graph-int8mix.json=rejected: features differ between CPU kinds, as int8rr's" \
  "graph: int8rr, one image per run, v1+v2=$r/regime-canonical.json=rejected: features differ between CPU kinds" \
  "graph: fp32, v1+v2=$r/graph-fp32.json=chosen graph: the same features on every CPU kind, +0.011 AUC over int8rr" \
  "data: v1+v2 only (v3, v4 scored)=$r/data-v12.json=rejected: 0.014 AUC and 0.06 TPR@5% below v1-v4" \
  "data: v1-v3 (v4 scored)=$r/data-v123.json=rejected: v4's real illustration 30% flagged at its edge" \
  "data: v1, v2, v4 (v3 scored)=$r/data-v124.json=rejected: v3's real faces 22% flagged at its edge" \
  "data: v1-v4 without v3's real sources=$r/data-v12-v3ai-v4.json=rejected: no gain over v1-v4" \
  "L2 strength C 0.0001, v1-v4=$r/data-v1234-c0.0001.json=rejected: photo 10.6% flagged (over 2x the promise)" \
  "class balance instead of source balance, v1-v4=$r/data-v1234-balance-class.json=rejected: photo 10.3% flagged (over 2x the promise)" \
  "int8rr, v1-v4, C 0.001=$r/data-v1234-c0.001.json=rejected: 2.2x faster on a VNNI CPU, but 3 of 4 verdicts agreed on an emulated AVX2 CPU" \
  "fp32, v1-v4, C 0.0003=$r/fp32-v1234-c0.0003.json=rejected: lower TPR, photo 9.2% flagged (near 2x the promise)" \
  "fp32, v1-v4, C 0.003=$r/fp32-v1234-c0.003.json=rejected: 0.005 AUC and 0.004 TPR@5% below C 0.001" \
  "fp32, v1-v4, C 0.001=$r/fp32-v1234-c0.001.json=shipped"
# The decisions are the shipped card's, taken on the figures of its table (2-core Intel
# Xeon; rows marked g2 there came from features extracted before graph version 3).
aiscan-export --clip-head "$r/fp32-v1234-c0.001.json" --out "$runs/clip-b16-head.onnx" \
  --model-id aiscan-clip-v3 --fpr 0.05 --miss 0.10 --levers "$runs/levers.json"
aiscan-export --card "$runs/clip-b16-head.onnx" --out "$runs/clip-b16-head.md"
# to ship: copy both to scanner/models/ (tests/test_cards.py holds the card to the model)
