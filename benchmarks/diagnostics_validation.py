"""Validate the label-free stage diagnostics against labels, and choose the ``mcl.stages: auto`` rule.

Phase ``runs`` trains and evaluates a grid of small labelled runs (data sets with different suppressed
attributes x backbones x seeds), each to ``--stages`` stages; phase ``analyse`` reads every run's
``stage-s/diagnostics.json`` (computed now from the recorded embeddings and clusters when a run predates
them) and its ``eval.json``, and writes ``benchmarks/results/diagnostics_validation.md``: the table of
stage transitions, the Spearman rank correlation of each diagnostic with the labelled gain of the
suppressed attribute (linear probe of ``mcl-s`` minus ``mcl-(s-1)``; ``mcl-1`` is ``stage-1``), the
auto-stage rule chosen on the *selection* data sets and its result on the *confirmation* data sets.

The suppressed attribute of a run is the attribute with the lowest stage-1 linear-probe lift over
chance (measured with labels, per run).

    python benchmarks/diagnostics_validation.py runs --root /tmp/mcl-validation      # ~1 min per run on an idle core
    python benchmarks/diagnostics_validation.py analyse --root /tmp/mcl-validation
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# name -> (generator, data seed, augment overrides): the suppressed attribute differs between them.
DATASETS = {
    "tri-a": ("trifeature", 0, {"augment.color_jitter": 0.2, "augment.grayscale": 0.0}),
    "tri-b": ("trifeature", 1, {"augment.color_jitter": 0.8, "augment.grayscale": 0.5}),
    "overlay": ("overlay", 0, {"augment.color_jitter": 0.2, "augment.grayscale": 0.0}),
}
SELECTION = ("tri-a", "tri-b")  # the auto-stage rule is chosen on these ...
CONFIRMATION = ("overlay",)  # ... and confirmed on these
BACKBONES = {
    "convnet": {"model.backbone": "convnet", "model.width": 0.5, "train.lr": 0.002, "train.weight_decay": 0.0001},
    "vit": {"model.backbone": "vit", "model.backbone_args": "{patch_size: 4, depth: 2, dim: 96, heads: 4, "
            "mlp_ratio: 2.0, pooling: mean, img_size: 16}", "train.lr": 0.001, "train.weight_decay": 0.05},
}
SEEDS = (0, 1)
BASE = {"data.image_size": 16, "data.n_train": 1000, "data.n_test": 400, "model.projection_dim": 64,
        "model.hidden_dim": 256, "train.epochs": 4, "train.batch_size": 100, "train.warmup_epochs": 1,
        "train.threads": 1, "mcl.clusters": 8, "mcl.min_group_size": 12, "eval.ensemble": False,
        "eval.references": False, "eval.linear_max_iter": 150, "augment.crop_scale": "[0.3, 1.0]"}


def run_names() -> list[tuple[str, str, int]]:
    """(data set, backbone, seed) of every run, data sets outermost."""
    return [(data, backbone, seed) for data in DATASETS for backbone in BACKBONES for seed in SEEDS]


def mcl(*args: str) -> None:
    """One mcl CLI call in a subprocess (this checkout's code)."""
    env = {"PYTHONPATH": os.environ.get("MCL_VALIDATION_SRC", str(REPO / "src")), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "mcl", *args], check=True, env=env)


def do_runs(root: Path, stages: int, reverse: bool = False) -> None:
    """Generate the data sets once, then train + evaluate every run not finished yet."""
    for name, (generator, seed, _) in DATASETS.items():
        target = root / "data" / name
        if not (target / "labels.csv").exists():
            mcl("generate", generator, "--out", str(target), "--n-train", str(BASE["data.n_train"]), "--n-test",
                str(BASE["data.n_test"]), "--image-size", str(BASE["data.image_size"]), "--seed", str(seed), "--quiet")
    names = run_names()
    for data, backbone, seed in reversed(names) if reverse else names:
        out = root / "runs" / f"{data}-{backbone}-s{seed}"
        if (out / "eval.json").exists():
            continue
        try:  # several workers share the grid: each run is claimed by exactly one
            (root / "claims").mkdir(parents=True, exist_ok=True)
            (root / "claims" / out.name).mkdir()
        except FileExistsError:
            continue
        settings = {**BASE, **DATASETS[data][2], **BACKBONES[backbone], "seed": seed, "mcl.stages": stages}
        sets = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
        started = time.perf_counter()
        mcl("train", str(REPO / "configs" / "demo.yaml"), "--data", str(root / "data" / data), "--out", str(out),
            "--quiet", *sets)
        mcl("eval", str(out), "--quiet")
        print(f"{out.name}: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    """Command line: ``runs`` or ``analyse``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["runs", "analyse"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mcl-validation"))
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--reverse", action="store_true", help="walk the grid backwards (a second worker)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diagnostics_validation.md")
    args = parser.parse_args()
    if args.phase == "runs":
        do_runs(args.root, args.stages, args.reverse)
    else:
        from benchmarks_analysis import analyse  # noqa: F401  (filled in below)


if __name__ == "__main__":
    main()
