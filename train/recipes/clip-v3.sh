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
for view in base jpeg flip crop blur; do
  aiscan-protocol features "${dirs[@]}" --out "$feats" --views "$view"
done

# -- 2. heads, leave one source out -------------------------------------------------------
heads() {  # heads NAME [options]
  local name=$1; shift
  [ -f "$runs/clip-heads/$name.json" ] && return
  aiscan-protocol heads "${dirs[@]}" --features "$feats" --out "$runs/clip-heads/$name.json" "$@"
}
# feature set (linear probe, C = 0.001 as the probe)
heads lin-embeds --on embeds
heads lin-cls11 --on cls:11
heads lin-cls-8-11 --on cls:8,9,10,11
heads lin-cls-all --on cls:all
# L2 strength of the chosen set
for c in 0.0003 0.003 0.01; do heads "lin-cls-all-c$c" --on cls:all --c "$c"; done
# head kind
heads mlp-cls-all --head mlp --on cls:all
# augmentation views
heads lin-cls-all-views --on cls:all --views base,jpeg,flip,crop,blur
# balance
heads lin-cls-all-class --on cls:all --balance class
# data: does train-v3 help? the same images scored, v3 only scored, never trained on
aiscan-protocol heads "$data/train-v1" "$data/train-v2" --score-only "$v3" \
  --features "$feats" --on cls:all --out "$runs/clip-heads/lin-cls-all-no-v3.json"
