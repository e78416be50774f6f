#!/usr/bin/env bash
# Benchmarks 1 (step overhead), 2 (clustering) and 5 (scaling) on a CUDA GPU, in one go.
#
#   bash benchmarks/gpu.sh            # results in $OUT (if set) or benchmarks/results-gpu/
#
# Needs a Python with torch (CUDA), kornia, numpy, scikit-learn, threadpoolctl, pyyaml, safetensors
# and faiss-cpu (or faiss-gpu); mcl itself is taken from src/. Each script runs under a timeout so
# that the whole script fits a 10-minute device slot; scikit-learn runs on the host CPU cores.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results-gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python}"
threads="$(nproc)"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

run() {  # name, timeout seconds, script arguments...
  local name="$1" limit="$2"
  shift 2
  echo "== $name (timeout ${limit}s)"
  timeout "$limit" "$python" "$@" --device cuda --threads "$threads" > "$out/$name.txt" 2>&1
  echo "exit $?"
  tail -n 30 "$out/$name.txt"
}

run step_overhead 150 benchmarks/step_overhead.py --steps 30 --resnet-batch 256
run clustering 270 benchmarks/clustering.py --full
run scaling 150 benchmarks/scaling.py --full-epoch-max 1000000
