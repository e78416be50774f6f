#!/usr/bin/env bash
# The demo with a ViT and a ResNet-18 (README "ResNet and ViT"): seeds 0, 1, 2 of
# configs/demo-vit.yaml and configs/demo-resnet18.yaml, one run at a time, train + evaluate, with wall times.
#
#   bash benchmarks/architectures.sh                 # all: vit and resnet18, seeds 0 1 2
#   bash benchmarks/architectures.sh vit 0           # one architecture, chosen seeds
#
# Each run goes to runs/arch-<arch>-s<seed>/ (train.txt, eval.txt, eval.json, time.txt: wall seconds of train and
# eval plus `uptime` before and after, since the 2-core timing depends on what else runs). Runs that finished
# (eval.json present) are skipped, so the script resumes.
set -uo pipefail
cd "$(dirname "$0")/.."
mcl="${MCL:-.venv/bin/mcl}"
archs="${1:-vit resnet18}"
shift || true
seeds="${*:-0 1 2}"
for seed in $seeds; do
  for arch in $archs; do
    out="runs/arch-$arch-s$seed"
    [ -f "$out/eval.json" ] && continue
    mkdir -p "$out"
    {
      echo "before: $(uptime)"
      t0=$(date +%s)
      nice -n 5 "$mcl" train "src/mcl/configs/demo-$arch.yaml" --out "$out" --quiet \
        --set seed="$seed" --set data.seed="$seed" > "$out/train.txt" 2>&1 || { echo "train failed"; continue; }
      t1=$(date +%s)
      nice -n 5 "$mcl" eval "$out" --quiet > "$out/eval.txt" 2>&1 || echo "eval failed"
      t2=$(date +%s)
      echo "train_s: $((t1 - t0))"
      echo "eval_s: $((t2 - t1))"
      echo "after: $(uptime)"
    } > "$out/time.txt" 2>&1
    echo "$arch seed $seed: $(tr '\n' ' ' < "$out/time.txt")"
  done
done
