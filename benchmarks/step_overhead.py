"""MCL step overhead: a stage-2 training step (``batch`` and ``mask`` negatives) vs a plain SimCLR step.

Same model, batch size, augmentation, optimiser (AdamW) and synthetic 32 px images; what differs
is only what MCL adds: the pseudo-label lookup, the group sampler (``batch``) or the group mask in
the loss (``mask``). A step is exactly what ``mcl.training`` does per batch: sampler -> labels ->
augment -> forward (both views) -> NT-Xent -> backward -> AdamW step. The three variants run
interleaved step by step; the table shows median ms per step and ``ratio = MCL / SimCLR``.

The pseudo-labels form 8 groups of ``2 * batch`` samples, so ``batch`` mode draws full batches,
like SimCLR (a smaller last batch would make MCL look cheaper than it is).

A second table times the loss alone (fixed embeddings, forward + backward), where all of MCL's
extra work happens, to explain the step ratio.

    python benchmarks/step_overhead.py [--quick] [--device cuda] [--steps 20]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from _common import endless, interleaved, limit_threads, machine, median, parser, spread, table, train_step

from mcl.config import config_from_dict
from mcl.objectives import NTXentLoss
from mcl.sampling import ClusterBatchSampler, RandomBatchSampler
from mcl.tasks import ImageContrastiveTask
from mcl.training import build_optimizer

GROUPS = 8


def step_function(task: ImageContrastiveTask, mode: str, labels: np.ndarray, seed: int) -> Callable[[], None]:
    """One training step of ``mode`` (simclr, mcl-batch, mcl-mask) per call, on its own model copy."""
    batch_size = task.config.train.batch_size
    model = task.build_model(seed)
    optimizer = build_optimizer(model.parameters(), task.config.train)
    if mode == "mcl-batch":
        sampler = ClusterBatchSampler(labels, batch_size, seed)
    else:
        sampler = RandomBatchSampler(len(labels), batch_size, seed)
    batches = endless(sampler)
    pseudo_labels = None if mode == "simclr" else torch.as_tensor(labels, device=task.device)

    def step() -> None:
        train_step(task, model, optimizer, next(batches), pseudo_labels)

    return step


def loss_function(batch_size: int, masked: bool, device: str) -> Callable[[], None]:
    """NT-Xent forward + backward on fixed (2 x batch, 128) embeddings, with or without the group mask."""
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(batch_size, 128, generator=generator).to(device).requires_grad_(True)
    z_b = torch.randn(batch_size, 128, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, GROUPS, (batch_size,), generator=generator).to(device) if masked else None
    loss_fn = NTXentLoss(0.5)
    return lambda: loss_fn(z_a, z_b, labels).backward()


def bench_backbone(backbone: str, batch_size: int, steps: int, device: str) -> tuple[list, list]:
    """Rows of the step table and of the loss table for one backbone."""
    config = config_from_dict({"data": {"image_size": 32},
                               "model": {"backbone": backbone},
                               "train": {"batch_size": batch_size, "device": device}})
    rng = np.random.default_rng(0)
    n_images = GROUPS * 2 * batch_size
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(GROUPS), 2 * batch_size)
    task = ImageContrastiveTask(config, images, torch.device(device))
    modes = ["simclr", "mcl-batch", "mcl-mask"]
    seconds = interleaved({mode: step_function(task, mode, labels, seed=1) for mode in modes}, steps, device,
                          warmup=2)
    base = median(seconds["simclr"])
    step_rows = [[backbone, batch_size, mode, 1000 * median(seconds[mode]), median(seconds[mode]) / base,
                  spread(seconds[mode]), len(seconds[mode])] for mode in modes]
    losses = interleaved({"plain": loss_function(batch_size, False, device),
                          "masked": loss_function(batch_size, True, device)}, 50, device, warmup=5)
    loss_rows = [[backbone, batch_size, 1000 * median(losses["plain"]), 1000 * median(losses["masked"]),
                  1000 * (median(losses["masked"]) - median(losses["plain"])), 1000 * base]]
    return step_rows, loss_rows


def main() -> None:
    """Print both tables."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--steps", type=int, default=None,
                         help="timed steps per variant (default 20 for the ConvNet, 10 for ResNet-18; quick 6)")
    options.add_argument("--resnet-batch", type=int, default=32, help="batch size for ResNet-18 (default 32)")
    args = options.parse_args()
    limit_threads(args.threads)
    steps = args.steps or (6 if args.quick else 20)
    print(f"# step overhead: {machine()}; {args.threads} threads")
    cases = [("convnet", 64 if args.quick else 256, steps),
             ("resnet18", 16 if args.quick else args.resnet_batch, args.steps or (6 if args.quick else 10))]
    step_rows, loss_rows = [], []
    for backbone, batch_size, backbone_steps in cases:
        rows, loss = bench_backbone(backbone, batch_size, backbone_steps, args.device)
        step_rows += rows
        loss_rows += loss
        print(table(STEP_HEADER, rows, with_header=False), flush=True)
    print()
    print(table(STEP_HEADER, step_rows))
    print()
    print(table(LOSS_HEADER, loss_rows))


STEP_HEADER = ["backbone", "batch", "variant", "ms/step", "ratio vs SimCLR", "IQR/median", "steps timed"]
LOSS_HEADER = ["backbone", "batch", "NT-Xent ms (plain)", "NT-Xent ms (masked)", "mask cost ms", "SimCLR step ms"]

if __name__ == "__main__":
    main()
