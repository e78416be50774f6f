"""MCL fine-tuning of an open_clip model in an open_clip-style loop: mcl supplies sampler, pseudo-labels, mask.

Stage 0 is the model before fine-tuning: its image embeddings are clustered, and every later stage
fine-tunes (text tower locked, image tower locked except its last group, constant low LR) with
feature-aware negatives: each batch is drawn from one pseudo-label group (``ClusterBatchSampler``)
and mcl's ``CLIPLoss`` also masks identical captions, which are not negatives of each other.

    python examples/clip_openclip.py --model ViT-B-32 --pretrained /path/to/open_clip_weights.safetensors
    python examples/clip_openclip.py --tiny --n-train 256 --epochs 1    # a smoke run: tiny random model

Needs ``open-clip-torch`` (the zoo environment: ``make install-zoo``). Weights are read from a local
file only (``--pretrained``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import open_clip
import torch

from mcl.augment import to_float_images
from mcl.data.captions import generate_captioned_trifeature
from mcl.data.table import load_table
from mcl.embedding import encode_images
from mcl.models.two_tower import OpenCLIPAdapter
from mcl.objectives.clip import CLIPLoss
from mcl.pseudolabels import PseudoLabeller, cluster_stage
from mcl.sampling import ClusterBatchSampler

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="local open_clip checkpoint (safetensors or .pt)")
    parser.add_argument("--tiny", action="store_true", help="a tiny randomly initialised model instead")
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    if args.tiny:
        open_clip.factory._MODEL_CONFIGS["mcl-example-tiny"] = TINY
        args.model, args.pretrained = "mcl-example-tiny", None
    torch.manual_seed(0)
    model = OpenCLIPAdapter.from_pretrained(args.model, args.pretrained)
    size = model.preprocess.spec.input_size or 224
    table = load_table(generate_captioned_trifeature(tempfile.mkdtemp() + "/tri", n_train=args.n_train, n_test=64,
                                                     image_size=size), image_size=size, progress=False)
    train = table.subset("train")
    images = torch.from_numpy(train.images.copy())
    _, caption_ids = np.unique(np.asarray(train.captions), return_inverse=True)
    tokens = model.tokenize(train.captions)
    criterion = CLIPLoss()

    labeller = PseudoLabeller(min_group_size=16)
    stage0 = cluster_stage(encode_images(model, train.images), clusters=10, seed=0)  # stage 0: before fine-tuning
    pseudo_labels = labeller.add_stage(stage0.labels, stage0.centroids)
    for stage in range(1, args.stages + 1):
        model.lock_text(0)
        model.lock_image(unlocked_groups=1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        sampler = ClusterBatchSampler(pseudo_labels, args.batch_size, seed=stage)
        model.train()
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for indices in sampler:
                index = torch.as_tensor(indices)
                loss = criterion(model.encode_image(to_float_images(images[index])), model.encode_text(tokens[index]),
                                 model.logit_scale, caption_ids=torch.as_tensor(caption_ids)[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        clusters = cluster_stage(encode_images(model, train.images), clusters=10, seed=stage)
        pseudo_labels = labeller.add_stage(clusters.labels, clusters.centroids)
        print(f"stage {stage}: loss {loss.item():.3f}, {labeller.info['groups']} pseudo-label groups")


if __name__ == "__main__":
    main()
