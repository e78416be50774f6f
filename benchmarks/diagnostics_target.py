"""How reliable is the labelled target of the diagnostics validation, and a less noisy version of it.

The validation (``benchmarks/diagnostics_validation.py``) correlates label-free diagnostics with the gain of
the suppressed attribute from stage s: ``acc(mcl-s) - acc(mcl-(s-1))`` of a linear probe fitted on the
1000 training images and scored on 400 test images. Phase ``predict`` re-embeds every run of that grid
(its recorded stage weights, no training) and records, per transition and per test image, whether the
probe of ``mcl-s`` and of ``mcl-(s-1)`` got the suppressed attribute right on

- ``test``: the run's own 400 test images (the harness's target, reproduced), and
- ``pool``: a large fresh labelled sample of the same generator (another data seed, never trained on),

for three linear fits of the harness protocol (C = 1, the run's ``eval.linear_max_iter``): ``train`` (fitted on
the training images, as the harness), ``pool-a`` / ``pool-b`` (fitted on one half of the pool, scored on the
other). Phase ``analyse`` (:func:`analyse`, called by the validation) measures the split-half reliability of
each target (Spearman-Brown corrected) and the ceiling it puts on any diagnostic's rank correlation.

    python benchmarks/diagnostics_target.py predict --root /tmp/mcl-validation --pool /tmp/mcl-pool
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

POOL_SEED = 100  # data seed of the fresh pool (the runs' data sets use seeds 0 and 1)
POOL_SIZE = 8000
PREDICTIONS = "targets"  # ROOT/targets/RUN.npz


def prediction_file(run: Path) -> Path:
    """Where :func:`predict_run` writes a run's predictions (beside the runs, not inside them)."""
    return run.parents[1] / PREDICTIONS / f"{run.name}.npz"


def make_pool(generator: str, pool_root: Path, image_size: int) -> Path:
    """A fresh labelled sample of ``generator`` (``POOL_SIZE`` images, split test), written once."""
    target = pool_root / generator
    if not (target / "labels.csv").exists():
        env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-m", "mcl", "generate", generator, "--out", str(target), "--n-train", "2",
                        "--n-test", str(POOL_SIZE), "--image-size", str(image_size), "--seed", str(POOL_SEED),
                        "--quiet"], check=True, env=env)
    return target


def suppressed_attribute(result: dict) -> str:
    """The attribute with the lowest stage-1 linear-probe lift over chance (as the validation harness)."""
    accuracy = {r["attribute"]: r["accuracy"] for r in result["rows"]
                if r["probe"] == "linear" and r["representation"] == "stage-1"}
    chance = {a: 1 / n for a, n in result["attribute_classes"].items()}
    return min(chance, key=lambda a: (accuracy[a] - chance[a]) / (1 - chance[a]))


def predict_run(run: Path, generator: str, pool_root: Path) -> None:
    """Write ``ROOT/targets/RUN.npz``: per-image correctness of every probe fit of mcl-1..mcl-k.

    ``generator``: the ``mcl generate`` generator of the run's data (its pool is a fresh sample of it).
    """
    import torch

    from mcl.api import load_member, read_run_config
    from mcl.data import load_table
    from mcl.evaluation.probes import linear_predictions
    from mcl.integration import MultistageEncoder, integrate

    torch.set_num_threads(1)
    config = read_run_config(run)
    result = json.loads((run / "eval.json").read_text())
    attribute = suppressed_attribute(result)
    table = load_table(config.data.path, config.data.image_size, progress=False)
    pool = load_table(make_pool(generator, pool_root, config.data.image_size), config.data.image_size,
                      progress=False)
    if pool.attribute_values[attribute] != table.attribute_values[attribute]:
        raise SystemExit(f"{run}: the pool's {attribute} classes differ from the run's")
    train, test = table.subset("train"), table.subset("test")
    stages = len(result["diagnostics"])
    raw = {}
    for stage in range(1, stages + 1):
        encoder = MultistageEncoder([load_member(run, f"stage-{stage}", config)])
        raw[stage] = [torch.from_numpy(encoder.embed_stages(t.images)[0]) for t in (train, test, pool)]
    classes = len(table.attribute_values[attribute])
    half = len(pool) // 2
    order = np.random.default_rng(POOL_SEED).permutation(len(pool))
    pool_a, pool_b = np.sort(order[:half]), np.sort(order[half:])
    y_train, y_test, y_pool = (np.asarray(t.attributes[attribute]) for t in (train, test, pool))
    out = {"attribute": np.array(attribute), "y_test": y_test, "y_pool": y_pool, "pool_a": pool_a, "pool_b": pool_b}
    max_iter = config.eval.linear_max_iter
    for k in range(1, stages + 1):
        x_train, x_test, x_pool = (integrate([raw[s][i] for s in range(1, k + 1)], config.mcl.integration)
                                   for i in range(3))
        predicted = linear_predictions(x_train, y_train, torch.cat([x_test, x_pool]), classes, config.eval.linear_c,
                                       max_iter)
        out[f"mcl-{k}/train/test"] = predicted[: len(x_test)] == y_test
        out[f"mcl-{k}/train/pool"] = predicted[len(x_test):] == y_pool
        for name, fit, scored in (("pool-a", pool_a, pool_b), ("pool-b", pool_b, pool_a)):
            predicted = linear_predictions(x_pool[fit], y_pool[fit], x_pool[scored], classes, config.eval.linear_c,
                                           max_iter)
            out[f"mcl-{k}/{name}/pool"] = predicted == y_pool[scored]
    (run.parents[1] / PREDICTIONS).mkdir(exist_ok=True)
    np.savez(prediction_file(run), **out)
    reproduced = {k: float(out[f"mcl-{k}/train/test"].mean()) for k in range(1, stages + 1)}
    recorded = {k: next(r["accuracy"] for r in result["rows"] if r["probe"] == "linear" and r["attribute"] == attribute
                        and r["representation"] == ("stage-1" if k == 1 else f"mcl-{k}")) for k in reproduced}
    print(f"{run.name}: {attribute} test acc reproduced {reproduced}, eval.json {recorded}", flush=True)


def predict(root: Path, pool_root: Path, generators: dict[str, str]) -> None:
    """:func:`predict_run` for every evaluated run of the grid without predictions yet.

    ``generators``: data set name (a run is named ``DATA-BACKBONE-sSEED``) -> its generator.
    """
    for run in sorted((root / "runs").glob("*")):
        if (run / "eval.json").exists() and not prediction_file(run).exists():
            predict_run(run, generators[run.name.rsplit("-", 2)[0]], pool_root)


def gains(run: Path) -> dict[int, dict[str, np.ndarray]]:
    """stage s -> target name -> per-image gain ``correct(mcl-s) - correct(mcl-(s-1))`` (values -1, 0, 1).

    Targets: ``test`` (the harness's: train-fitted probe, the run's 400 test images), ``pool`` (train-fitted
    probe, the fresh pool) and ``cross`` (the pool-a and pool-b fits, each on the other half; the arrays of
    the two fits side by side, so a half of it is one fit scored on its own held-out half).
    """
    arrays = np.load(prediction_file(run))
    stages = sorted({int(key.split("/")[0].split("-")[1]) for key in arrays if key.startswith("mcl-")})
    out = {}
    for s in stages[1:]:
        def diff(key: str, s: int = s) -> np.ndarray:
            return arrays[f"mcl-{s}/{key}"].astype(np.int8) - arrays[f"mcl-{s - 1}/{key}"].astype(np.int8)

        out[s] = {"test": diff("train/test"), "pool": diff("train/pool"),
                  "cross": np.concatenate([diff("pool-a/pool"), diff("pool-b/pool")])}
    return out


def pool_accuracy(run: Path, k: int) -> float:
    """The suppressed attribute's accuracy of mcl-k's train-fitted probe on the fresh pool."""
    return float(np.load(prediction_file(run))[f"mcl-{k}/train/pool"].mean())


def split_half_reliability(per_image: list[np.ndarray], splits: int = 200, seed: int = 0,
                           halves: list[tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[float, float]:
    """(Spearman-Brown corrected split-half reliability, mean half-half Spearman) of a gain over transitions.

    ``per_image``: one array of per-image gains per transition (all the same length). Each split draws
    disjoint random halves of the images (the same for every transition, as they share the test set) unless
    ``halves`` gives fixed ones; the gain on each half is the mean, and the rank correlation between the two
    halves' gains across transitions is averaged over splits, then stepped up to the full length.
    """
    from scipy.stats import spearmanr

    n = len(per_image[0])
    rng = np.random.default_rng(seed)
    values = []
    for i in range(len(halves) if halves else splits):
        if halves:
            a, b = halves[i]
        else:
            order = rng.permutation(n)
            a, b = order[: n // 2], order[n // 2:]
        values.append(spearmanr([g[a].mean() for g in per_image], [g[b].mean() for g in per_image]).statistic)
    r = float(np.mean(values))
    return 2 * r / (1 + r), r


NOISE_TARGETS = {"test": "harness target: train-fitted probe, the run's 400 test images",
                 "pool": f"train-fitted probe, {POOL_SIZE} fresh images",
                 "cross": f"two pool-fitted probes ({POOL_SIZE // 2} images each), each scored on the other half"}


def reliability(runs: list[tuple[Path, int]]) -> list[dict]:
    """Per target: split-half reliability (Spearman-Brown), its ceiling on |rho|, and the sampling noise.

    ``runs``: the (run directory, stage) of each transition. ``noise_sd``: the root mean square over
    transitions of the gain's binomial standard error (paired per-image differences, in points);
    ``spread_sd``: the standard deviation of the gains across transitions. ``rho_pool``: Spearman of the
    target with the ``pool`` target (the least noisy), i.e. how well a perfect predictor of the
    near-noise-free gain would score against this target.
    """
    from scipy.stats import spearmanr

    per = [gains(run)[stage] for run, stage in runs]
    pool_gain = [g["pool"].mean() for g in per]
    out = []
    for name, what in NOISE_TARGETS.items():
        images = [g[name] for g in per]
        halves = None
        if name == "cross":  # the two fits are the natural halves: independent probe fits and test images
            n = len(images[0]) // 2
            halves = [(np.arange(n), np.arange(n, 2 * n))]
        rel, half = split_half_reliability(images, halves=halves)
        gain = np.array([g.mean() for g in images])
        noise = np.sqrt(np.mean([g.var() / len(g) for g in images]))
        out.append({"target": name, "what": what, "images": len(images[0]), "reliability": rel, "half_rho": half,
                    "ceiling": float(np.sqrt(max(rel, 0.0))), "noise_sd": 100 * noise,
                    "spread_sd": 100 * float(gain.std(ddof=1)),
                    "rho_pool": float(spearmanr(gain, pool_gain).statistic)})
    return out


def main() -> None:
    """Command line: ``predict``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["predict"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mcl-validation"))
    parser.add_argument("--pool", type=Path, default=Path(os.environ.get("MCL_POOL", "/tmp/mcl-pool")))
    args = parser.parse_args()
    from diagnostics_validation import DATASETS

    predict(args.root, args.pool, {name: generator for name, (generator, _, _) in DATASETS.items()})


if __name__ == "__main__":
    main()
