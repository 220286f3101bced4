#!/usr/bin/env bash
# End-to-end speed of an earlier commit against the working tree, same model and corpora,
# alternating runs (before, after, before, after) so that a change in the machine's load
# shows as spread, not as a difference. Results: benchmarks/results/*_{before,after}N.json
# Usage: [TAG=name-] bash benchmarks/before_after.sh COMMIT MODEL [aiscan-bench options...]
#   TAG prefixes the result files' tags (name-before1...), so that runs do not overwrite.
# e.g.   bash benchmarks/before_after.sh 19371a9 runs/final-lite0/model.onnx \
#          --corpus 1024px,12mp --images 128,24 --baselines ort
set -euo pipefail
commit=$1 model=$(realpath "$2"); shift 2
tag=${TAG:-}
here=$(pwd)
old=$(mktemp -d /tmp/aiscan-before.XXXXXX)
git worktree add -q --detach "$old/src" "$commit"
trap 'git worktree remove --force "$old/src"; rm -rf "$old"' EXIT
# the old tree's packages under one aiscan namespace, ahead of the installed one
mkdir -p "$old/pkg/aiscan" && touch "$old/pkg/aiscan/__init__.py"
for d in model scanner export train benchmarks; do
  [ -d "$old/src/$d" ] && ln -s "$old/src/$d" "$old/pkg/aiscan/$d"
done
for round in 1 2; do
  echo "== before ($commit), round $round"
  (cd "$old/src" && PYTHONPATH="$old/pkg" python -m aiscan.benchmarks.cli --model "$model" \
    --results-dir "$here/benchmarks/results" --tag "${tag}before$round" "$@")
  echo "== after (working tree), round $round"
  python -m aiscan.benchmarks.cli --model "$model" --tag "${tag}after$round" "$@"
done
