"""Cost of the label-free stage diagnostics against the demo's training, measured side by side.

A = one demo training step (configs/demo.yaml: ConvNet width 0.5, 32 px, batch 256, kornia/fused
augmentation, NT-Xent, AdamW); B = the diagnostics of a third stage (the most expensive: two earlier stages
to predict from) on the fixed sample of :data:`mcl.diagnostics.DIAGNOSTICS_SAMPLE` rows of the demo's
embedding width, ``view_novelty`` included; C = a stage's views pass (``task.embed_views``: two augmented
views of the sample's odd positions through the encoder, once per stage). A, B and C alternate in one process.
A demo stage is ``epochs x ceil(n_train / batch)`` steps (embedding and k-means not counted, so the ratio is an
upper bound); the ratio printed is one stage's diagnostics and views over one stage's steps.

    python benchmarks/diagnostics_cost.py --threads 1
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, limit_threads, machine, median, parser, spread, table, train_step

from mcl.config import load_config
from mcl.diagnostics import DIAGNOSTICS_SAMPLE, sample_rows, stage_diagnostics, view_rows
from mcl.tasks import ImageContrastiveTask
from mcl.training import build_optimizer


def main() -> None:
    """Print the side-by-side table."""
    options = parser(__doc__.split("\n")[0])
    args = options.parse_args()
    limit_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 8)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    size, batch = config.data.image_size, config.train.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(2 * batch, DIAGNOSTICS_SAMPLE), size, size, 3), dtype=np.uint8)
    task = ImageContrastiveTask(config, images, torch.device(args.device))
    model = task.build_model(1)
    optimizer = build_optimizer(model.parameters(), config.train)
    indices = np.arange(batch)
    width = int(task.embed(model).shape[1])
    centres = rng.normal(size=(config.mcl.clusters, width)) * 3
    sample = DIAGNOSTICS_SAMPLE

    def stage_embeddings(seed: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.random.default_rng(seed).integers(0, config.mcl.clusters, sample)
        noise = np.random.default_rng(seed + 1).normal(size=(sample, width))
        return (centres[labels] + noise).astype(np.float32), labels

    (first, first_labels), (second, second_labels), (third, third_labels) = (stage_embeddings(s) for s in (1, 2, 3))
    pseudo = first_labels * config.mcl.clusters + second_labels
    rows = view_rows(sample_rows(len(images), config.seed))
    views = [tuple(stage_embeddings(10 * s + v)[0][1::2] for v in (0, 1)) for s in (1, 2, 3)]
    seconds = interleaved({
        "step": lambda: train_step(task, model, optimizer, indices),
        "diagnostics": lambda: stage_diagnostics(third, [first, second], third_labels, pseudo, config.mcl.clusters, 0,
                                                 views=views),
        "views": lambda: task.embed_views(model, rows),
    }, repeats, args.device, warmup=1)
    steps = config.train.epochs * math.ceil(config.data.n_train / batch)
    step, diagnostics, viewing = (median(seconds[name]) for name in ("step", "diagnostics", "views"))
    print(f"# diagnostics cost: {machine()}; {args.threads} threads; embedding width {width}, sample {sample}, "
          f"{len(rows)} view rows")
    print(table(["what", "median s", "IQR/median", "rounds"],
                [["demo training step", step, spread(seconds["step"]), len(seconds["step"])],
                 ["stage-3 diagnostics", diagnostics, spread(seconds["diagnostics"]), len(seconds["diagnostics"])],
                 ["a stage's views pass", viewing, spread(seconds["views"]), len(seconds["views"])]]))
    print()
    print(table(["demo stage (steps)", "stage s", "diagnostics + views s", "(diagnostics + views) / stage"],
                [[steps, steps * step, diagnostics + viewing, (diagnostics + viewing) / (steps * step)]]))


if __name__ == "__main__":
    main()
