#!/usr/bin/env bash
# Prepare what a lent GPU machine (Python 3.12, no network, no DALI, no onnxruntime-gpu)
# needs for benchmarks/gpu/check.sh, as parts small enough for one device call each.
#
#   bash benchmarks/gpu/prepare.sh [MODEL.onnx]
#
# Writes gpu-carry/part-01 ... part-NN (each 45 MiB, git-ignored). MODEL defaults to the
# shipped one (already in the working tree); give one to check another model. Carry them one call
# at a time (the device tool's `carry` keeps ignored paths between calls on a warm machine),
# e.g. run(command="ls gpu-carry", carry=["gpu-carry/part-01"]), then part-02, ...
# and last: run(command="bash benchmarks/gpu/check.sh", carry=[...the last part...]).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-}
stage=$(mktemp -d)
house="$stage/wheelhouse"
mkdir -p "$house"
py=(--python-version 3.12 --only-binary=:all:
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform any)
# What the GPU machine lacks; numpy, pillow and torch are already there. aiscan itself
# installs from the carried working tree (with its shipped model), built offline with
# the setuptools and wheel carried here.
python -m pip download -q "${py[@]}" -d "$house" \
  nvidia-dali-cuda130==2.4.0 onnxruntime-gpu==1.31.1 rich pytest "setuptools>=77" wheel
rm -f "$house"/numpy-*.whl
if [ -n "$model" ]; then cp "$model" "$stage/model.onnx"; fi
tar -C "$stage" -cf "$stage.tar" .
rm -rf gpu-carry && mkdir -p gpu-carry
# The 64 MiB a call carries include the working tree (13.5 MB of it the shipped model).
split -b "${PART_MB:-45}M" -d -a 2 "$stage.tar" "$stage/part-"
rm -f "$stage.tar"
for part in "$stage"/part-*; do
  n=$(basename "$part" | sed 's/part-//'); n=$((10#$n + 1))
  dir=$(printf "gpu-carry/part-%02d" "$n")
  mkdir -p "$dir" && mv "$part" "$dir/data"
done
rm -rf "$stage"
ls -1 gpu-carry | wc -l | xargs echo "parts:"; du -sh gpu-carry
