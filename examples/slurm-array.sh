#!/usr/bin/env bash
# One nightly scan split over a Slurm job array: task I of N scans shard I/N, the last
# step merges the parts and checks they add up (every file once).
#   sbatch --array=0-7 examples/slurm-array.sh /data/store /scratch/aiscan
#SBATCH --job-name=aiscan
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
set -euo pipefail
store=$1 work=$2
n=${SLURM_ARRAY_TASK_COUNT:?run as an array job}
i=${SLURM_ARRAY_TASK_ID:?run as an array job}
mkdir -p "$work"
# A crashed task is rerun with the same command: --resume continues its journal.
aiscan "$store" --out "$work/part-$i-of-$n.csv" --shard "$i/$n" --resume --max-error-rate 0.01
# The merge runs once every part is finished; submit it with
#   sbatch --dependency=afterok:<array job id> --wrap "aiscan merge $work/part-*-of-$n.csv \
#     --out $work/all.parquet --tree $store"
