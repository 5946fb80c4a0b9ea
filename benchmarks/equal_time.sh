#!/usr/bin/env bash
# The equal-time study: recipes trained for the same MINUTES, scored against the tutorial baseline anime_dcgan.
# Each recipe is trained for MINUTES of training wall time (one at a time, on an otherwise idle machine), with
# snapshots, then every snapshot scored and the report written (benchmarks/equal_time.py).
#   bash benchmarks/equal_time.sh [MINUTES=30] [SEED=0] [STUDY=runs/study] [RECIPE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}; seed=${2:-0}; study=${3:-runs/study}; shift $(( $# < 3 ? $# : 3 ))
recipes=("$@"); [ ${#recipes[@]} -gt 0 ] || recipes=(anime_dcgan anime_projected anime_pg anime_from_mnist)
marks="[$(python3 -c "m=$minutes; print(','.join(f'{x:g}' for x in (m/30, m/15, m/10, m/6) if x < m))")]"
for r in "${recipes[@]}"; do
  run="$study/$r-s$seed"
  [ -f "$run/generator/model.safetensors" ] && { echo "done already: $run"; continue; }
  ganxfer train "recipes/$r.yaml" --run-dir "$run" --overwrite --set seed="$seed" --set train.kimg=100000 \
    --set train.minutes="$minutes" --set train.snapshot_every_minutes="$(python3 -c "print($minutes/3)")" \
    --set train.snapshot_at_minutes="$marks" --set train.checkpoint_every_kimg=0
done
python benchmarks/equal_time.py score "$study"
python benchmarks/equal_time.py report "$study" --baseline "anime_dcgan-s$seed" --docs "docs/equal_time"
