#!/usr/bin/env bash
# The prepared first GPU check (about 8 minutes on one H100; benchmarks/gpu_check.py says what it measures):
#   ../shared/tools/make-gpu-bundle gpu-bundle 12000     # here, once; carry gpu-bundle to the GPU machine
#   bash benchmarks/gpu_check.sh gpu-bundle "$OUT"        # there; OUT gets RESULTS.md, the JSON lines, generator/
#   bash benchmarks/gpu_check.sh --smoke                  # here: the same steps at toy sizes on the CPU
# Then, here: ganxfer evaluate OUT/generator --data $GANXFER_DATA/anime-faces-64 --num 1000 --metrics kid,pr
set -u
python=${PYTHON:-python3}
if [ "${1:-}" = "--smoke" ]; then  # the assets come from the environment (source ../shared/env.sh)
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    cp benchmarks/RESULTS.md "$out/RESULTS.md"  # rows go to a copy: toy sizes are no result
    NO_COLOR=1 "$python" benchmarks/gpu_check.py --out "$out" --device cpu --quick --results "$out/RESULTS.md"
    exit
fi
bundle=${1:?usage: gpu_check.sh BUNDLE OUT [gpu_check.py options] | gpu_check.sh --smoke}
out=${2:?usage: gpu_check.sh BUNDLE OUT}
shift 2
mkdir -p "$out"
source "$bundle/env.sh"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # no install needed: the device has ganxfer's dependencies
export NO_COLOR=1 TQDM_MININTERVAL=10
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; "$python" -c "import torch, accelerate, timm; print('torch', torch.__version__, 'accelerate', accelerate.__version__, 'timm', timm.__version__)"; } | tee "$out/machine.txt"
timeout 450 "$python" benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tail -c 200000 > "$out/gpu_check.log"
echo "gpu_check.py exit ${PIPESTATUS[0]}" | tee -a "$out/gpu_check.log"
cp benchmarks/RESULTS.md "$out/RESULTS.md"
grep '^{' "$out/gpu_check.log" || tail -40 "$out/gpu_check.log"
