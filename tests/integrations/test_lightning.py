"""Two MCL stages under PyTorch Lightning: stage 2's batches each come from one pseudo-label group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("pytorch_lightning")

from mcl.integrations.lightning import MCLCallback, MCLDataModule  # noqa: E402
from mcl.objectives import NTXentLoss  # noqa: E402


class TinySimCLR(pl.LightningModule):
    """A linear encoder on two noisy views; records every batch's sample ids."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        self.loss = NTXentLoss(temperature=0.5)
        self.batches: list[tuple[int, np.ndarray]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.batches.append((self.current_epoch, batch["index"].numpy()))
        images = batch["input"]
        views = [images + 0.05 * torch.randn_like(images) for _ in range(2)]
        return self.loss(self.encoder(views[0]), self.encoder(views[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def embed(module: TinySimCLR, loader) -> torch.Tensor:
    return torch.cat([module.encoder(batch["input"]) for batch in loader])


def test_two_stages_with_single_group_batches(tmp_path) -> None:
    torch.manual_seed(0)
    images = torch.rand(96, 3, 8, 8)
    data = MCLDataModule(images, batch_size=16, clusters=3, min_group_size=8, seed=0)
    trained = []
    for _ in (1, 2):
        module = TinySimCLR()
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, use_distributed_sampler=False,
                             callbacks=[MCLCallback(embed)], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        labels_before = data.pseudo_labels
        trainer.fit(module, datamodule=data)
        trained.append((module, labels_before))
    (stage1, none), (stage2, labels) = trained
    assert none is None and labels is not None and len(np.unique(labels)) >= 2
    for epoch in (0, 1):  # every sample once per epoch
        seen = np.concatenate([ids for e, ids in stage2.batches if e == epoch])
        assert sorted(seen.tolist()) == list(range(96))
    assert all(len(np.unique(labels[ids])) == 1 for _, ids in stage2.batches)       # the MCL part
    assert any(len(np.unique(labels[ids])) > 1 for _, ids in stage1.batches)         # stage 1: random batches
    order = [np.concatenate([ids for e, ids in stage2.batches if e == epoch]) for epoch in (0, 1)]
    assert not np.array_equal(order[0], order[1])  # set_epoch: each epoch its own batch order
    assert data.plan.stage == 3 and data.pseudo_labels is not None  # re-clustered after stage 2 as well
