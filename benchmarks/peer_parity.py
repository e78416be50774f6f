"""Stage 1 of mcl vs lightly's NTXentLoss in a plain loop: same backbone, augmentation, batches and steps.

Run in the zoo venv (``make install-zoo``)::

    nice .venv-zoo/bin/python benchmarks/peer_parity.py            # the demo config, ~3-6 min on 2 cores
    nice .venv-zoo/bin/python benchmarks/peer_parity.py --quick    # 1 epoch, 1000 images: a smoke run

Algorithm:
  1. ``mcl.train(configs/demo.yaml, mcl.stages=1, eval.ensemble=false)``: mcl's own trainer, its NT-Xent.
  2. A plain PyTorch loop with ``lightly.loss.NTXentLoss`` (same temperature) on the *same* pieces of
     mcl: the stage-1 seed's fresh encoder, the two-view augmentation, the shuffled batches of the same
     sampler and seed, AdamW with the same warm-up/cosine learning rate, the same number of steps.
  3. Linear probe (``mcl.evaluation.probes.linear_probe``) of each model's backbone features, per
     Trifeature attribute (shape, texture, colour), train split -> test split.

Only the loss implementation (and the augmentation's random draws) differ, so the accuracies should
agree to within run-to-run noise (about a point); a gap of several points means the losses differ.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightly.loss import NTXentLoss as LightlyNTXent

import mcl
from mcl.augment import build_augmentation, to_float_images
from mcl.config import Config
from mcl.data.table import load_table
from mcl.evaluation.probes import linear_probe
from mcl.integration import MultistageEncoder
from mcl.models import build_encoder
from mcl.sampling import RandomBatchSampler
from mcl.stages import stage_seed
from mcl.training import build_optimizer, learning_rate

ROOT = Path(__file__).resolve().parents[1]


def train_with_lightly(config: Config, images: np.ndarray) -> torch.nn.Module:
    """Stage 1's recipe, driven by lightly's NT-Xent in a plain loop (CPU, float32, no AMP)."""
    seed = stage_seed(config, 1)
    torch.manual_seed(seed)  # the same initial weights as mcl's stage 1 (ImageContrastiveTask.build_model)
    model = build_encoder(config.model.backbone, config.model.width, config.model.projection_dim,
                          config.model.hidden_dim)
    augment = build_augmentation(config.augment, images.shape[1])
    loss_fn = LightlyNTXent(temperature=config.objective.temperature)
    optimizer = build_optimizer(model.parameters(), config.train)
    sampler = RandomBatchSampler(len(images), config.train.batch_size, seed)
    pixels = torch.from_numpy(np.array(images, copy=True))
    total, warmup = len(sampler) * config.train.epochs, int(config.train.warmup_epochs * len(sampler))
    step = 0
    model.train()
    for epoch in range(config.train.epochs):
        sampler.set_epoch(epoch)
        for rows in sampler:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, warmup, config.train.lr)
            batch = to_float_images(pixels[torch.as_tensor(rows)])
            z_a, z_b = model(augment(torch.cat([batch, batch]))).chunk(2)  # one forward, shared BatchNorm
            loss = loss_fn(z_a, z_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        print(f"  lightly epoch {epoch + 1}/{config.train.epochs}: last loss {loss.item():.4f}", flush=True)
    return model.eval()


def probe(model: torch.nn.Module, train, test) -> dict[str, float]:  # noqa: ANN001
    """Linear-probe accuracy of the backbone features, per attribute."""
    encoder = MultistageEncoder([model]).eval()
    train_x, test_x = encoder.embed_stages(train.images)[0], encoder.embed_stages(test.images)[0]
    return {name: linear_probe(train_x, train.attributes[name], test_x, test.attributes[name])
            for name in train.attribute_names()}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    args.add_argument("--quick", action="store_true", help="1 epoch on 1000 images (a smoke run)")
    args.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    options = args.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    overrides = ["mcl.stages=1", "eval.ensemble=false", "train.device=cpu"]  # amp stays off (the default)
    if options.quick:
        overrides += ["train.epochs=1", "data.n_train=1000", "data.n_test=300", "train.warmup_epochs=0"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = mcl.train(options.config, out=Path(tmp) / "mcl", overrides=overrides, progress=False)
        mcl_seconds = time.perf_counter() - started
        config = run.config
        table = load_table(config.data.path, image_size=config.data.image_size)
        train, test = table.subset("train"), table.subset("test")
        started = time.perf_counter()
        peer = train_with_lightly(config, train.images)
        peer_seconds = time.perf_counter() - started
        results = {"mcl stage 1 (NTXentLoss)": probe(run.history.models[0], train, test),
                   "lightly NTXentLoss loop": probe(peer, train, test)}
    names = train.attribute_names()
    print(f"\n{len(train)} train / {len(test)} test images, {config.train.epochs} epochs, batch "
          f"{config.train.batch_size}, temperature {config.objective.temperature}, torch {torch.__version__}; "
          f"train time mcl {mcl_seconds:.0f} s, lightly loop {peer_seconds:.0f} s\n")
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, accuracies in results.items():
        print(f"| {label} | " + " | ".join(f"{100 * accuracies[n]:.1f}" for n in names) + " |")
    gaps = [abs(results["mcl stage 1 (NTXentLoss)"][n] - results["lightly NTXentLoss loop"][n]) for n in names]
    print(f"\nlargest gap: {100 * max(gaps):.1f} points")


if __name__ == "__main__":
    main()
