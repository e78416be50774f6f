"""Peer throughput: mcl's SimCLR stage vs the same model trained with lightly's NTXentLoss in a plain loop.

Both sides use mcl's ResNet-18 (CIFAR stem) + projection head, the same synthetic 32 px images, batch
size, RandomBatchSampler order, kornia augmentation (``ImageContrastiveTask.views``) and AdamW; what
differs is the loss (``mcl.objectives.NTXentLoss`` vs ``lightly.loss.NTXentLoss``, temperature 0.5)
and the loop: mcl's real ``mcl.training.train`` (lr schedule, finite checks, end-of-epoch checkpoint
and metrics files) vs a bare ``for`` loop. A third variant, mcl's loss in the same bare loop,
separates the loss from the loop. Epochs of the three alternate (after one untimed round); the
table shows median training images/s and the ratio to lightly.

lightly needs torchvision, whose PyPI wheels do not load with this project's CPU-only torch; run this
script from a separate environment (see benchmarks/README.md)::

    python -m venv /tmp/lightly-venv
    /tmp/lightly-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly kornia pyyaml safetensors \
        scikit-learn threadpoolctl tqdm
    /tmp/lightly-venv/bin/python benchmarks/peer_throughput.py [--quick] [--device cuda]
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, limit_threads, machine, median, parser, table, task_batch

from mcl.config import config_from_dict
from mcl.sampling import RandomBatchSampler
from mcl.tasks import ImageContrastiveTask
from mcl.training import build_optimizer, train


def mcl_epoch(task: ImageContrastiveTask, workdir: Path) -> Callable[[], None]:
    """One epoch of mcl's own training loop per call (a fresh stage directory each time, no resume)."""
    model = task.build_model(1)
    calls = itertools.count()

    def run() -> None:
        sampler = RandomBatchSampler(task.num_samples, task.config.train.batch_size, seed=1)
        stage_dir = workdir / f"epoch-{next(calls)}"
        stage_dir.mkdir()
        train(model, task.loss, task.loader(sampler), task.config.train, stage_dir, progress=False)

    return run


def plain_epoch(task: ImageContrastiveTask, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> Callable[[], None]:
    """One epoch of a bare loop (views -> model -> ``loss_fn(z_a, z_b)`` -> AdamW) per call."""
    model = task.build_model(1)
    optimizer = build_optimizer(model.parameters(), task.config.train)

    def run() -> None:
        model.train()
        for indices in RandomBatchSampler(task.num_samples, task.config.train.batch_size, seed=1):
            z_a, z_b = model(task.views(task_batch(task, indices))).chunk(2)
            loss = loss_fn(z_a, z_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def main() -> None:
    """Print the throughput table."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    options.add_argument("--images", type=int, default=256, help="training images per epoch (default 256)")
    args = options.parse_args()
    limit_threads(args.threads)
    import lightly

    repeats = args.repeats or (2 if args.quick else 3)
    batch, n_images = (16, 64) if args.quick else (args.batch, args.images)
    config = config_from_dict({"data": {"image_size": 32}, "model": {"backbone": "resnet18"},
                               "objective": {"temperature": 0.5},
                               "train": {"batch_size": batch, "device": args.device, "epochs": 1,
                                         "warmup_epochs": 0}})
    images = np.random.default_rng(0).integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    task = ImageContrastiveTask(config, images, torch.device(args.device))
    print(f"# peer throughput: {machine()}; lightly {lightly.__version__}; {args.threads} threads; ResNet-18 "
          f"CIFAR, 32 px, batch {batch}, {n_images} images per epoch, {repeats} timed epochs each")
    from lightly.loss import NTXentLoss as LightlyNTXent

    with tempfile.TemporaryDirectory() as workdir:
        seconds = interleaved({"mcl stage": mcl_epoch(task, Path(workdir)),
                               "mcl loss, bare loop": plain_epoch(task, task.objective),
                               "lightly loss, bare loop": plain_epoch(task, LightlyNTXent(temperature=0.5))},
                              repeats, args.device)
    lightly_rate = n_images / median(seconds["lightly loss, bare loop"])
    rows = [[name, batch, n_images / median(values), n_images / median(values) / lightly_rate]
            for name, values in seconds.items()]
    print(table(["variant", "batch", "images/s", "ratio vs lightly"], rows))
    stage, bare = median(seconds["mcl stage"]), median(seconds["mcl loss, bare loop"])
    per_image = bare / n_images
    fixed = stage - bare  # checkpoint + metrics files, lr schedule, checks: paid once per epoch
    cifar = per_image * 50_000
    print(f"\nmcl stage fixed cost per epoch: {fixed:.2f} s (stage minus bare loop, same loss). Derived, not "
          f"measured: for a 50,000-image epoch at the measured per-image time the stage would run at "
          f"{50_000 / (cifar + fixed) / lightly_rate:.3f} x lightly's rate.")

if __name__ == "__main__":
    main()
