"""Time of ``mcl eval`` against the training it scores, on the demo configuration, side by side.

One process trains ``configs/demo.yaml`` (``mcl.api.train``, timed) and then evaluates the run
(``mcl.api.evaluate``) with the linear probe as it is now (closed-form gradient) and as it was before
(autograd through ``F.cross_entropy``; the copy below), alternating the two evaluations round by
round. It also times the phases of one evaluation (embedding all representations, linear probes,
kNN probes) and checks that both probe versions give the same rows. Target: eval <= 0.5 x train.

    python benchmarks/eval_time.py --threads 1            # the demo itself (4000 / 1000 images, 8 epochs)
    python benchmarks/eval_time.py --threads 1 --quick    # 1000 / 250 images, same model and epochs

Writes ``benchmarks/results/eval_time-t<threads>[-quick].md``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import limit_threads, machine, median, parser, table

import mcl.evaluation.probes as probes
import mcl.evaluation.runner as runner
from mcl.api import evaluate, load_member, train

ROOT = Path(__file__).resolve().parents[1]


def autograd_linear_probe(train_x, train_y, test_x, test_y, c: float = 1.0, max_iter: int = 1000) -> float:
    """The linear probe before the closed-form gradient (mcl at ad15914): autograd at every L-BFGS step."""
    x_train, x_test = probes._as_tensor(train_x, torch.float64), probes._as_tensor(test_x, torch.float64)
    y_train, y_test = probes._as_tensor(train_y, torch.long), probes._as_tensor(test_y, torch.long)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(x_train))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + penalty * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predictions = (x_test @ weight + bias).argmax(1)
    return float((predictions == y_test).double().mean())


def timed_eval(run_dir: Path, probe: Callable) -> tuple[float, dict[str, float], list[dict]]:
    """Wall seconds of ``mcl.api.evaluate`` with ``probe`` as the linear probe, its phases, and its rows."""
    phases = {"embed": 0.0, "linear": 0.0, "knn": 0.0}

    def clocked(name: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - started
        return wrapper

    saved = runner.linear_probe, runner.knn_probe, runner.representations
    runner.linear_probe = clocked("linear", probe)
    runner.knn_probe = clocked("knn", saved[1])
    runner.representations = clocked("embed", saved[2])
    try:
        started = time.perf_counter()
        result = evaluate(run_dir, progress=False)
        seconds = time.perf_counter() - started
    finally:
        runner.linear_probe, runner.knn_probe, runner.representations = saved
    return seconds, phases, result["rows"]


def main() -> None:
    """Train, evaluate before/after interleaved, write the results table."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--keep", help="train into this new directory (kept afterwards) instead of a temporary one")
    args = options.parse_args()
    limit_threads(args.threads)
    repeats = args.repeats or 1
    overrides = [f"train.threads={args.threads}"]
    if args.quick:
        overrides += ["data.n_train=1000", "data.n_test=250"]
    header = machine()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(args.keep or Path(scratch) / "run")
        started = time.perf_counter()
        if (run_dir / "manifest.json").exists():
            options.error(f"--keep {run_dir}: exists; the training time is only measured on a fresh run")
        train(ROOT / "configs" / "demo.yaml", run_dir, overrides=overrides, progress=False)
        train_seconds = time.perf_counter() - started
        load_member(run_dir, "stage-1")  # first-load costs (imports) outside the timed evaluations
        rounds: dict[str, list] = {"before": [], "after": []}
        for _ in range(repeats):
            rounds["before"].append(timed_eval(run_dir, autograd_linear_probe))
            rounds["after"].append(timed_eval(run_dir, probes.linear_probe))
    same = all(r[2] == rounds["before"][0][2] for side in rounds.values() for r in side)
    rows = []
    for side, results in rounds.items():
        seconds = median([r[0] for r in results])
        phase = {name: median([r[1][name] for r in results]) for name in ("embed", "linear", "knn")}
        rows.append([side, seconds, phase["embed"], phase["linear"], phase["knn"], train_seconds,
                     seconds / train_seconds])
    size = "quick (1000 train / 250 test images)" if args.quick else "demo (4000 train / 1000 test images)"
    text = (f"# eval time: {header}; {args.threads} threads; {size}, configs/demo.yaml otherwise; "
            f"{repeats} round(s)\n\n"
            + table(["linear probe", "eval s", "embed s", "linear s", "knn s", "train s", "eval / train"], rows)
            + f"\n\nbefore/after eval.json rows identical: {'yes' if same else 'NO'}; "
            f"eval speed-up {rows[0][1] / rows[1][1]:.2f}x\n")
    print(text)
    out = ROOT / "benchmarks" / "results" / f"eval_time-t{args.threads}{'-quick' if args.quick else ''}.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
