#!/usr/bin/env bash
# Does the MNIST warm start help? anime_from_mnist vs anime_scratch_projected, same budget, same seed,
# with in-training KID, then `ganxfer plot` and benchmarks/transfer_summary.py.
# Usage (from the repo root, assets sourced):
#   bash benchmarks/transfer_study.sh KIMG EVAL_EVERY EVAL_NUM NUM_REAL [extra --set args...]
# CPU example (this repo's RESULTS.md): bash benchmarks/transfer_study.sh 10 2 500 2000
# GPU example: bash benchmarks/transfer_study.sh 100 5 5000 20000 --set train.mixed_precision=bf16
set -euo pipefail
kimg=${1:-3}; every=${2:-1}; num=${3:-250}; num_real=${4:-1000}; shift 4 || true
out=${STUDY_DIR:-runs/transfer_study}
common=(--set "train.kimg=$kimg" --set "eval.every_kimg=$every" --set "eval.num=$num" --set "eval.num_real=$num_real"
        --set eval.metrics=[kid] --set "train.sample_every_kimg=$every" --set "train.log_every_kimg=$every" "$@")
for recipe in anime_from_mnist anime_scratch_projected; do
  cmd=train; [ $recipe = anime_from_mnist ] && cmd=finetune
  # kimg 0: the starting generator itself, scored the same way
  ganxfer $cmd recipes/$recipe.yaml --set train.kimg=0 --run-dir "$out/$recipe-start" --overwrite "${@}" > /dev/null
  ganxfer evaluate "$out/$recipe-start" --data "$GANXFER_DATA/anime-faces-64" --num "$num" --num-real "$num_real" \
    --metrics kid --json "$out/$recipe-start.json"
  ganxfer $cmd recipes/$recipe.yaml "${common[@]}" --run-dir "$out/$recipe" --overwrite
done
ganxfer plot "$out/anime_from_mnist" "$out/anime_scratch_projected" --out "$out/curves.png"
python "$(dirname "$0")/transfer_summary.py" "$out"  # KID table into RESULTS.md, $out/samples.png
