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
import json
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
    "overlay-b": ("overlay", 1, {"augment.color_jitter": 0.8, "augment.grayscale": 0.5}),
}
SELECTION = ("tri-a", "tri-b")  # the auto-stage rule is chosen on these ...
CONFIRMATION = ("overlay", "overlay-b")  # ... and confirmed on these
BACKBONES = {
    "convnet": {"model.backbone": "convnet", "model.width": 0.5, "train.lr": 0.002, "train.weight_decay": 0.0001},
    "vit": {"model.backbone": "vit", "model.width": 1.0, "train.lr": 0.001, "train.weight_decay": 0.05,
            "model.backbone_args": "{patch_size: 4, depth: 2, dim: 96, heads: 4, mlp_ratio: 2.0, pooling: mean, "
                                   "img_size: 16}"},
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


# Diagnostics compared (keys of stage-s/diagnostics.json); "rankme_change" = RankMe(s) - RankMe(s-1).
SIGNALS = ("novelty", "novelty_cka", "residual_rankme", "novel_rank", "rankme", "rankme_change", "uniformity",
           "stability", "nmi_previous", "ari_previous", "new_structure", "groups_trained", "mean_negatives")


def linear_accuracy(result: dict) -> dict[tuple[str, str], float]:
    """(representation, attribute) -> linear-probe accuracy of an eval.json."""
    return {(r["representation"], r["attribute"]): r["accuracy"] for r in result["rows"] if r["probe"] == "linear"}


def current_diagnostics(run: Path, stages: int) -> dict[int, dict]:
    """Every stage's diagnostics recomputed by this checkout's code from the run's recorded embeddings."""
    import hashlib

    from mcl.api import read_run_config
    from mcl.files import load_arrays
    from mcl.run import CLUSTERS_FILE, PSEUDO_LABELS_FILE, RunDirectory
    from mcl.stages import compute_diagnostics

    code = hashlib.sha256(b"".join((REPO / "src" / "mcl" / name).read_bytes()
                                   for name in ("diagnostics.py", "stages.py"))).hexdigest()[:16]
    cache = run / f".diagnostics-{code}.json"  # recomputed once per version of the diagnostics code
    if cache.exists():
        return {int(stage): values for stage, values in json.loads(cache.read_text()).items()}
    directory, config = RunDirectory(run), read_run_config(run)
    out = {}
    for stage in range(1, stages + 1):
        labels = load_arrays(directory.stage_dir(stage) / CLUSTERS_FILE)["labels"]
        path = directory.stage_dir(stage) / PSEUDO_LABELS_FILE
        pseudo = load_arrays(path)["pseudo_labels"] if path.exists() else None
        out[stage] = compute_diagnostics(directory, config, stage, len(labels), labels, pseudo)
    cache.write_text(json.dumps(out))
    return out


def transitions(root: Path) -> list[dict]:
    """One record per (run, stage s >= 2): the diagnostics of stage s and the labelled gain it brought."""
    records = []
    for run in sorted((root / "runs").glob("*")):
        if not (run / "eval.json").exists():
            continue
        result = json.loads((run / "eval.json").read_text())
        accuracy = linear_accuracy(result)
        chance = {a: 1 / n for a, n in result["attribute_classes"].items()}
        lift = {a: (accuracy[("stage-1", a)] - chance[a]) / (1 - chance[a]) for a in chance}
        suppressed = min(lift, key=lift.get)
        diagnostics = current_diagnostics(run, len(result["diagnostics"]))
        stages = sorted(diagnostics)
        for stage in stages[1:]:
            before = "stage-1" if stage == 2 else f"mcl-{stage - 1}"
            record = {"run": run.name, "data": run.name.rsplit("-", 2)[0], "stage": stage, "suppressed": suppressed,
                      "before": accuracy[(before, suppressed)], "after": accuracy[(f"mcl-{stage}", suppressed)]}
            record["gain"] = record["after"] - record["before"]
            gains = [accuracy[(f"mcl-{stage}", a)] - accuracy[(before, a)] for a in chance]
            record["gain_all"] = sum(gains) / len(gains)
            values = dict(diagnostics[stage])
            values["rankme_change"] = values["rankme"] - diagnostics[stage - 1]["rankme"]
            record.update({name: values.get(name) for name in SIGNALS})
            records.append(record)
    return records


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def auto_pick(records: list[dict], signal: str, threshold: float, max_stages: int) -> dict[str, int]:
    """Stages the auto rule trains per run: continue after stage s >= 2 while ``signal(s) >= threshold``."""
    picks = {}
    for run in dict.fromkeys(r["run"] for r in records):
        mine = {r["stage"]: r for r in records if r["run"] == run}
        k = 2
        while k < max_stages and mine[k][signal] >= threshold:
            k += 1
        picks[run] = k
    return picks


def suppressed_accuracy(records: list[dict]) -> dict[tuple[str, int], float]:
    """(run, k) -> suppressed-attribute accuracy of mcl-k."""
    out = {}
    for r in records:
        out[(r["run"], r["stage"])] = r["after"]
        out[(r["run"], r["stage"] - 1)] = out.get((r["run"], r["stage"] - 1), r["before"])
    return out


def evaluate_rule(records: list[dict], signal: str, threshold: float, max_stages: int) -> dict:
    """Mean suppressed accuracy and stages of the auto rule vs fixed max_stages and the better fixed choice."""
    picks = auto_pick(records, signal, threshold, max_stages)
    acc = suppressed_accuracy(records)
    runs = list(picks)
    fixed = {k: sum(acc[(run, k)] for run in runs) / len(runs) for k in range(2, max_stages + 1)}
    auto = sum(acc[(run, picks[run])] for run in runs) / len(runs)
    return {"runs": len(runs), "auto": auto, "stages": sum(picks.values()) / len(runs), "fixed": fixed,
            "best_fixed": max(fixed.values()), "picks": picks}


def analyse(root: Path, out: Path, max_stages: int) -> str:
    """Write the validation table, the correlations and the auto-stage result (markdown) to ``out``."""
    records = transitions(root)
    lines = ["# Label-free stage diagnostics vs the labelled gain of the suppressed attribute", "",
             f"{len({r['run'] for r in records})} runs, {len(records)} stage transitions (stage s >= 2). Gain = "
             "linear-probe accuracy of the suppressed attribute (lowest stage-1 lift over chance) of mcl-s minus "
             "mcl-(s-1). Grid: " + ", ".join(DATASETS) + f" x {', '.join(BACKBONES)} x seeds {SEEDS}; "
             f"settings {BASE}.", "",
             "| run | s | suppressed | gain | gain (all) | " + " | ".join(SIGNALS) + " |",
             "|---" * (5 + len(SIGNALS)) + "|"]
    for r in records:
        lines.append(f"| {r['run']} | {r['stage']} | {r['suppressed']} | {100 * r['gain']:+.1f} | "
                     f"{100 * r['gain_all']:+.1f} | " + " | ".join(
            "-" if r[name] is None else f"{r[name]:.3g}" for name in SIGNALS) + " |")
    groups = {"all": records,
              "selection (" + ", ".join(SELECTION) + ")": [r for r in records if r["data"] in SELECTION],
              "confirmation (" + ", ".join(CONFIRMATION) + ")": [r for r in records if r["data"] in CONFIRMATION]}
    for target, what in (("gain", "the suppressed attribute's gain"),
                         ("gain_all", "the mean gain over all attributes (a less noisy target)")):
        lines += ["", f"Spearman rank correlation of each diagnostic with {what}:", "",
                  "| diagnostic | " + " | ".join(f"{name} (n={len(rows)})" for name, rows in groups.items()) + " |",
                  "|---" * (1 + len(groups)) + "|"]
        for name in SIGNALS:
            cells = []
            for rows in groups.values():
                pairs = [(r[name], r[target]) for r in rows if r[name] is not None]
                cells.append(f"{spearman(*zip(*pairs, strict=True)):+.2f}" if len(pairs) >= 3 else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    selection = [r for r in records if r["data"] in SELECTION]
    best = None
    for signal in SIGNALS:
        values = sorted({r[signal] for r in selection if r[signal] is not None})
        for threshold in values + [float("inf")]:
            result = evaluate_rule(selection, signal, threshold, max_stages)
            score = (round(result["auto"], 4), -result["stages"])
            if best is None or score > best[0]:
                best = (score, signal, threshold)
    if best is not None:
        _, signal, threshold = best
        lines += ["", f"Auto rule chosen on the selection sets: continue after stage s >= 2 while {signal} >= "
                  f"{threshold:.4g} (max {max_stages} stages).", "",
                  "| runs | auto: mean stages | auto: suppressed acc | fixed k: suppressed acc | better fixed |",
                  "|---|---|---|---|---|"]
        for name, rows in groups.items():
            if rows:
                result = evaluate_rule(rows, signal, threshold, max_stages)
                fixed = ", ".join(f"{k}: {100 * v:.1f}" for k, v in result["fixed"].items())
                lines.append(f"| {name} | {result['stages']:.2f} | {100 * result['auto']:.1f} | {fixed} | "
                             f"{100 * result['best_fixed']:.1f} |")
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


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
        print(analyse(args.root, args.out, args.stages))


if __name__ == "__main__":
    main()
