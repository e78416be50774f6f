#!/usr/bin/env bash
# The demo with a ViT and a ResNet-18 (README "Other backbones"): seeds 0, 1, 2 of
# configs/demo-vit.yaml and configs/demo-resnet18.yaml, one run at a time, train + evaluate, with wall times.
#
#   bash benchmarks/architectures.sh                 # all: vit and resnet18, seeds 0 1 2
#   bash benchmarks/architectures.sh vit 0           # one architecture, chosen seeds
#   bash benchmarks/architectures.sh summary [knn]   # the README tables from the finished runs (linear by default)
#   ARCH_SETS="--set train.threads=1" bash benchmarks/architectures.sh resnet18   # extra overrides for every run
#
# Each run goes to runs/arch-<arch>-s<seed>/ (train.txt, eval.txt, eval.json, time.txt: wall seconds of train and
# eval plus `uptime` before and after, since the 2-core timing depends on what else runs). Runs that finished
# (eval.json present) are skipped, so the script resumes. The summary names, per seed, stage 1's weakest and
# strongest attribute (linear probe) and their change in mcl-k, where k is the run's last stage.
set -uo pipefail
cd "$(dirname "$0")/.."
mcl="${MCL:-.venv/bin/mcl}"
python="${PYTHON:-.venv/bin/python}"
if [ "${1:-}" = summary ]; then
  exec "$python" - runs "${2:-linear}" <<'PY'
"""Summarise runs/arch-<arch>-s<seed>/eval.json: linear-probe table per seed, weakest/strongest stage-1 attribute."""
import json
import re
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
probe = sys.argv[2] if len(sys.argv) > 2 else "linear"
runs = sorted(root.glob("arch-*-s*/eval.json"))
by_arch: dict[str, list] = {}
for path in runs:
    arch, seed = re.match(r"arch-(.+)-s(\d+)", path.parent.name).groups()
    rows = json.loads(path.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    acc = {(r["representation"], r["attribute"]): 100 * r["accuracy"] for r in rows if r["probe"] == probe}
    reps = list(dict.fromkeys(r for r, _ in acc))  # as mcl eval lists them: stages, mcl-k, ensemble-k, references
    attrs = list(dict.fromkeys(a for _, a in acc))
    time_txt = (path.parent / "time.txt").read_text()
    times = dict(re.findall(r"(train_s|eval_s): (\d+)", time_txt))
    loads = re.findall(r"load average: ([\d.]+)", time_txt)
    k = max(int(r.split("-")[1]) for r in reps if r.startswith("mcl-"))
    s1 = {a: acc[("stage-1", a)] for a in attrs}
    weak, strong = min(attrs, key=s1.get), max(attrs, key=s1.get)
    print(f"\n### {arch} seed {seed} ({probe}; train {times.get('train_s')} s, eval {times.get('eval_s')} s, "
          f"load avg {' -> '.join(loads)})\n")
    print("| representation | " + " | ".join(attrs) + " |")
    print("|---|" + "---:|" * len(attrs))
    for r in reps:
        print(f"| {r} | " + " | ".join(f"{acc[(r, a)]:.1f}" for a in attrs) + " |")
    by_arch.setdefault(arch, []).append(dict(
        seed=seed, weak=weak, strong=strong, k=k,
        weak_s1=s1[weak], weak_mcl=acc[(f"mcl-{k}", weak)], weak_ens=acc.get((f"ensemble-{k}", weak)),
        strong_s1=s1[strong], strong_mcl=acc[(f"mcl-{k}", strong)], strong_ens=acc.get((f"ensemble-{k}", strong)),
        train_s=int(times.get("train_s", 0)), eval_s=int(times.get("eval_s", 0))))

for arch, items in by_arch.items():
    k = items[0]["k"]
    print(f"\n### {arch}: weakest / strongest stage-1 attribute ({probe})\n")
    print(f"| seed | weakest | stage-1 | mcl-{k} | gain | ensemble-{k} | strongest | stage-1 | mcl-{k} | change "
          "| train + eval (s) |")
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for it in items:
        ens = f"{it['weak_ens']:.1f}" if it["weak_ens"] is not None else "-"
        print(f"| {it['seed']} | {it['weak']} | {it['weak_s1']:.1f} | {it['weak_mcl']:.1f} | "
              f"{it['weak_mcl'] - it['weak_s1']:+.1f} | {ens} | {it['strong']} | {it['strong_s1']:.1f} | "
              f"{it['strong_mcl']:.1f} | {it['strong_mcl'] - it['strong_s1']:+.1f} | {it['train_s']} + {it['eval_s']} |")
    gains = [it["weak_mcl"] - it["weak_s1"] for it in items]
    changes = [it["strong_mcl"] - it["strong_s1"] for it in items]
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    print(f"\n{arch}: n={len(items)} weakest gain mean {statistics.mean(gains):+.1f} (min {min(gains):+.1f}, "
          f"max {max(gains):+.1f}, sd {sd(gains):.1f}); strongest change mean {statistics.mean(changes):+.1f} "
          f"(min {min(changes):+.1f}, max {max(changes):+.1f})")
PY
fi
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
        --set seed="$seed" --set data.seed="$seed" ${ARCH_SETS:-} >> "$out/train.txt" 2>&1 || { echo "train failed"; continue; }
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
