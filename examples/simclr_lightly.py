"""MCL inside a plain SimCLR loop with lightly's loss: mcl only supplies the batches and the pseudo-labels.

Stage 1 is ordinary SimCLR (random batches). After each stage the training set is embedded and
clustered; the next stage draws every batch from ONE pseudo-label group (``ClusterBatchSampler``),
so lightly's in-batch negatives are exactly MCL's feature-aware negatives. Finally the stages'
features are concatenated (``MultistageEncoder``) and probed per attribute.

    python examples/simclr_lightly.py --stages 3 --epochs 8          # the demo's scale (~3 min on 2 cores)
    python examples/simclr_lightly.py --n-train 512 --epochs 1       # a smoke run (seconds)

Needs ``lightly`` (the zoo environment: ``make install-zoo``).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from lightly.loss import NTXentLoss

from mcl.augment import build_augmentation, to_float_images
from mcl.config import AugmentConfig
from mcl.data.table import load_table
from mcl.data.trifeature import generate_trifeature
from mcl.evaluation.probes import linear_probe
from mcl.integration import MultistageEncoder
from mcl.models import build_encoder
from mcl.pseudolabels import PseudoLabeller, cluster_stage
from mcl.sampling import ClusterBatchSampler, RandomBatchSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=10)
    args = parser.parse_args()

    table = load_table(generate_trifeature(tempfile.mkdtemp() + "/tri", n_train=args.n_train, n_test=args.n_train // 4,
                                           progress=False), image_size=32, progress=False)
    train, test = table.subset("train"), table.subset("test")
    images = torch.from_numpy(train.images.copy())
    augment = build_augmentation(AugmentConfig(color_jitter=0.2, grayscale=0.0), 32)  # weak jitter, as the demo
    criterion = NTXentLoss(temperature=0.5)  # lightly's SimCLR loss, unchanged

    labeller, pseudo_labels, stages = PseudoLabeller(min_group_size=32), None, []
    for stage in range(1, args.stages + 1):
        torch.manual_seed(stage)
        model = build_encoder("convnet", width=0.5)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        sampler = (RandomBatchSampler(len(images), args.batch_size, seed=stage) if pseudo_labels is None
                   else ClusterBatchSampler(pseudo_labels, args.batch_size, seed=stage))  # the MCL part
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for indices in sampler:
                batch = to_float_images(images[torch.as_tensor(indices)])
                loss = criterion(model(augment(batch)), model(augment(batch)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            features = torch.nn.functional.normalize(model.features(to_float_images(images)), dim=1)
        clusters = cluster_stage(features, args.clusters, seed=stage)
        pseudo_labels = labeller.add_stage(clusters.labels, clusters.centroids)  # all stages so far, combined
        stages.append(model)
        print(f"stage {stage}: loss {loss.item():.3f}, {labeller.info['groups']} pseudo-label groups")

    representations = {"stage-1": MultistageEncoder(stages[:1]), f"mcl-{len(stages)}": MultistageEncoder(stages)}
    for name, encoder in representations.items():
        train_x, test_x = torch.from_numpy(encoder.embed(train.images)), torch.from_numpy(encoder.embed(test.images))
        scores = {a: linear_probe(train_x, train.attributes[a], test_x, test.attributes[a])
                  for a in table.attribute_names()}
        print(name, " ".join(f"{a}={100 * v:.1f}" for a, v in scores.items()))


if __name__ == "__main__":
    main()
