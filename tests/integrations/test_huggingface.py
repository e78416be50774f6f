"""Two MCL stages under the Hugging Face Trainer: stage 2's batches each come from one pseudo-label group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import TrainingArguments  # noqa: E402

from mcl.integrations import StagePlan  # noqa: E402
from mcl.integrations.huggingface import MCLTrainer  # noqa: E402
from mcl.objectives import NTXentLoss  # noqa: E402


class TinyContrastive(nn.Module):
    """``forward(index, pixel_values) -> {"loss"}`` on two noisy views; records every batch's sample ids."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        self.criterion = NTXentLoss(temperature=0.5)
        self.batches: list[np.ndarray] = []

    def forward(self, index: torch.Tensor, pixel_values: torch.Tensor) -> dict:
        if self.training:
            self.batches.append(index.cpu().numpy())
        views = [pixel_values + 0.05 * torch.randn_like(pixel_values) for _ in range(2)]
        return {"loss": self.criterion(self.encoder(views[0]), self.encoder(views[1]))}


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i]}


def test_two_stages_with_single_group_batches(tmp_path) -> None:
    torch.manual_seed(0)
    images = torch.rand(96, 3, 8, 8)
    plan = StagePlan(len(images), batch_size=16, clusters=3, min_group_size=8, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=2,
                             learning_rate=0.1, report_to=[], save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, logging_strategy="no")
    models, labels = [], []
    for _ in (1, 2):
        labels.append(plan.pseudo_labels)
        trainer = MCLTrainer(plan=plan, model=TinyContrastive(), args=args, train_dataset=Images(images))
        trainer.train()
        model = trainer.model.eval()
        with torch.no_grad():
            trainer.recluster(model.encoder(images))
        models.append(model)
    assert labels[0] is None and len(np.unique(labels[1])) >= 2
    stage2 = models[1].batches
    assert len(stage2) == 2 * len(trainer.sampler)
    assert all(len(np.unique(labels[1][ids])) == 1 for ids in stage2)    # the MCL part
    assert any(len(np.unique(labels[1][ids])) > 1 for ids in models[0].batches)
    epochs = [np.concatenate(stage2[: len(stage2) // 2]), np.concatenate(stage2[len(stage2) // 2:])]
    assert sorted(epochs[0].tolist()) == sorted(epochs[1].tolist()) == list(range(96))
    assert not np.array_equal(epochs[0], epochs[1])  # set_epoch: each epoch its own batch order
