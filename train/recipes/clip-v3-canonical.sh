#!/usr/bin/env bash
# The shipped default since aiscan-clip-v3: every image in one pixel regime (the canonical
# copy: fit in 256 px, JPEG q85, as train-v1/v2's copies were made), CLIP ViT-B/16 features
# of the int8rr graph (the same on every x86 CPU), a linear head on the class tokens of
# all 12 blocks, fitted on the originals of train-v1 to train-v4; every decision taken on
# held-out sources scored as originals.
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
feats int8rr canonical "${v12[@]}" "${v34[@]}"   # ~25 min on 2 cores
feats int8rr native "${v12[@]}" "${v34[@]}"      # ~45 min (originals decoded at size)
feats int8mix canonical "${v12[@]}"              # the precision comparison (issue 27)
feats fp32 canonical "${v12[@]}"                 # ~50 min

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
