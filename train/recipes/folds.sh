#!/usr/bin/env bash
# Grouped cross-validation of one recipe: K runs, each trained without the sources of one
# fold and scored on them after every epoch (RUN/holdout/epoch_N.csv), then pooled by
# `aiscan-protocol folds`. Resumable: rerun the same command to continue where it stopped.
# Usage: bash train/recipes/folds.sh RUNS_DIR NAME K [aiscan-train options...]
set -euo pipefail
runs=$1 name=$2 k=$3; shift 3
data=$(cd "${AISCAN_DATA:-../shared/data}" && pwd)
epochs=5  # aiscan-train's default, unless --epochs is given
prev=""; for a in "$@"; do [ "$prev" = --epochs ] && epochs=$a; prev=$a; done
for i in $(seq 1 "$k"); do
  out="$runs/$name/fold$i"
  # done when it has the epochs asked for (a larger --epochs continues a finished run)
  if [ -f "$out/history.json" ] && python - "$out" "$epochs" <<'PY'
import json, sys
h = json.load(open(f"{sys.argv[1]}/history.json"))
sys.exit(0 if len(h["epochs"]) >= int(sys.argv[2]) else 1)
PY
  then echo "== $name fold $i/$k: done"; continue; fi
  echo "== $name fold $i/$k: $(date -u +%H:%M:%S)"
  resume=(); [ -f "$out/checkpoint_last.pth" ] && resume=(--resume)
  aiscan-train "$data/train-v1" "$data/train-v2" --out "$out" --fold "$i/$k" "${resume[@]}" "$@"
done
aiscan-protocol folds "$runs/$name"/fold* --out "$runs/$name/protocol.json"
