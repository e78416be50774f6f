"""Scaling: time and peak memory of every MCL phase as the training set grows (10k -> 100k -> 1M).

Synthetic 8 px uint8 images and mcl's smallest ConvNet (``width 0.25``: 8-16-32-64 channels,
64-d features), K = 10, two earlier stages' clusterings for the regrouping. Phases, in stage order:

- ``train``: ``--steps`` real training steps (cluster sampler -> labels -> augment -> forward ->
  NT-Xent -> backward -> AdamW); an epoch is ``len(sampler)`` such steps (a few more than ``N / batch``:
  the sampler rounds up per group), so the epoch time is the per-step time times that count
  (extrapolated above ``--full-epoch-max`` samples, measured below);
- ``embed``: features of all N images (``ImageContrastiveTask.embed``);
- ``cluster``: ``mcl.clustering.kmeans`` of the N x 64 features (mcl defaults, torch backend);
- ``regroup``: pseudo-labels from the stages' clusters (combine, centroids, merge small groups),
  the ``ClusterBatchSampler`` built on them, and one full epoch of its batches.

Peak memory is the peak RSS during the phase (Linux ``clear_refs``/``VmHWM``) minus the RSS at its
start. ``per-sample`` columns divide by N; the ``growth`` columns are the per-sample cost divided by
that of the previous size: 1.0 is linear, above 1 grows faster than linearly.

    python benchmarks/scaling.py [--quick] [--device cuda]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from _common import (
    endless,
    limit_threads,
    machine,
    parser,
    peak_rss_mb,
    peak_rss_reset,
    rss_mb,
    table,
    timed,
    train_step,
)

from mcl.clustering import kmeans
from mcl.config import config_from_dict
from mcl.sampling import ClusterBatchSampler
from mcl.stages import StageHistory, next_pseudo_labels
from mcl.tasks import ImageContrastiveTask
from mcl.training import build_optimizer

CLUSTERS = 10
BATCH = 256


def measure(phase: Callable[[], object], device: str) -> tuple[float, float, object]:
    """``(seconds, extra peak MiB, result)`` of one phase."""
    peak_rss_reset()
    start_rss = rss_mb()
    result = []
    seconds = timed(lambda: result.append(phase()), device)
    return seconds, max(0.0, peak_rss_mb() - start_rss), result[0]


def train_steps(task: ImageContrastiveTask, labels: np.ndarray, sampler: ClusterBatchSampler,
                steps: int) -> Callable[[], int]:
    """``steps`` training steps through ``sampler`` (wrapping to the next epoch if needed)."""
    model = task.build_model(1)
    optimizer = build_optimizer(model.parameters(), task.config.train)
    pseudo_labels = torch.as_tensor(labels, device=task.device)

    def run() -> int:
        done = 0
        for indices in itertools.islice(endless(sampler), steps):
            train_step(task, model, optimizer, indices, pseudo_labels)
            done += 1
        return done

    return run


def regroup(first: np.ndarray, second: np.ndarray, centroids: np.ndarray, config) -> Callable[[], int]:
    """Pseudo-labels from two stages, their sampler, and one epoch of its batches; returns the batch count."""
    history = StageHistory(cluster_labels=[first, second], centroids=[centroids, centroids])

    def run() -> int:
        labels, _ = next_pseudo_labels(history, config)
        sampler = ClusterBatchSampler(labels, BATCH, seed=0)
        for _ in sampler:
            pass
        return len(sampler)

    return run


def bench_size(n: int, steps: int, full_epoch_max: int, device: str) -> dict[str, tuple[float, float, str]]:
    """phase -> (seconds, extra peak MiB, note) at training-set size ``n``."""
    config = config_from_dict({"data": {"image_size": 8},
                               "model": {"width": 0.25, "hidden_dim": 64, "projection_dim": 32},
                               "train": {"batch_size": BATCH, "device": device}})
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    task = ImageContrastiveTask(config, images, torch.device(device))
    del images
    results: dict[str, tuple[float, float, str]] = {}
    start_labels = rng.integers(0, CLUSTERS, n)
    sampler = ClusterBatchSampler(start_labels, BATCH, seed=1)
    epoch_steps = len(sampler)  # per-group rounding: a few more batches than ceil(n / BATCH)
    run_steps = epoch_steps if n <= full_epoch_max else steps
    seconds, memory, _ = measure(train_steps(task, start_labels, sampler, run_steps), device)
    note = f"{run_steps} of {epoch_steps} steps timed" if run_steps < epoch_steps else f"{epoch_steps} steps"
    results["train (epoch)"] = (seconds * epoch_steps / run_steps, memory, note)
    seconds, memory, features = measure(lambda: task.embed(task.build_model(2)), device)
    results["embed"] = (seconds, memory, "")
    seconds, memory, clusters = measure(lambda: kmeans(features, CLUSTERS, seed=0, backend="torch",
                                                       device=device), device)
    results["cluster"] = (seconds, memory, f"{clusters.iterations} full-data Lloyd iterations")
    seconds, memory, batches = measure(regroup(clusters.labels, start_labels, clusters.centroids, config), device)
    results["regroup + sampler epoch"] = (seconds, memory, f"{batches} batches")
    return results


def main() -> None:
    """Print the scaling table."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--steps", type=int, default=40, help="timed training steps above --full-epoch-max")
    options.add_argument("--full-epoch-max", type=int, default=100_000, help="largest N trained a full epoch")
    args = options.parse_args()
    limit_threads(args.threads)
    sizes = [1_000, 10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print(f"# scaling: {machine()}; {args.threads} threads; 8 px images, ConvNet width 0.25, K={CLUSTERS}, "
          f"batch {BATCH}")
    measured = {}
    for n in sizes:
        measured[n] = bench_size(n, args.steps, args.full_epoch_max, args.device)
        print(f"N={n:,}: " + ", ".join(f"{k} {s:.2f} s / {m:.0f} MiB" for k, (s, m, _) in measured[n].items()),
              flush=True)
    rows = []
    for phase in measured[sizes[0]]:
        previous = None
        for n in sizes:
            seconds, memory, note = measured[n][phase]
            per_sample = 1e6 * seconds / n
            growth = per_sample / previous if previous else float("nan")
            rows.append([phase, f"{n:,}", seconds, per_sample, growth, memory, 1024 * 1024 * memory / n, note])
            previous = per_sample
    print()
    print(table(["phase", "N", "seconds", "us/sample", "growth vs previous N", "peak MiB (extra)", "bytes/sample",
                 "note"], rows))


if __name__ == "__main__":
    main()
