"""MCL with PyTorch Lightning: a DataModule that hands Lightning the group sampler, a callback that re-clusters.

:class:`MCLDataModule` wraps a training dataset (items become ``{"index": i, ...}``, see
:class:`~mcl.integrations.IndexedDataset`) and serves each stage's batches through a ``DataLoader`` with
``batch_sampler=`` the stage's sampler (:class:`~mcl.integrations.StagePlan`: random batches in stage 1,
single-group batches after). :class:`MCLCallback` calls the sampler's ``set_epoch`` at every epoch start
(Lightning itself only reseeds ``dataloader.sampler``) and, when a stage's ``fit`` ends, embeds the training set
with your ``embed(module, dataloader) -> (N, D)`` and re-clusters. One ``Trainer.fit`` per stage; pass
``use_distributed_sampler=False`` so Lightning keeps the sampler (under DDP it takes the trainer's rank and world
size: ``batch_size`` is the global batch, each rank its slice, every rank in the same group at each step).

Example:
    >>> data = MCLDataModule(dataset, batch_size=256, clusters=10)
    >>> for stage in range(3):
    ...     module = MySimCLR()                       # reads batch["index"], batch["input"]
    ...     trainer = pl.Trainer(max_epochs=10, use_distributed_sampler=False, callbacks=[MCLCallback(embed)])
    ...     trainer.fit(module, datamodule=data)      # re-clusters at the end
    ...     encoders.append(module.encoder)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

try:
    import pytorch_lightning as pl
except ImportError:  # the unified package
    import lightning.pytorch as pl

from mcl.integrations import IndexedDataset, StagePlan

__all__ = ["MCLCallback", "MCLDataModule"]

Embed = Callable[[pl.LightningModule, DataLoader], "np.ndarray | torch.Tensor"]


class MCLDataModule(pl.LightningDataModule):
    """The training set with MCL's batches; ``plan`` holds the pseudo-labels between stages."""

    def __init__(self, dataset: Dataset, batch_size: int, clusters: int = 10, min_group_size: int = 32,
                 seed: int = 0, num_workers: int = 0, key: str = "input", **loader_args: Any) -> None:
        super().__init__()
        self.dataset = IndexedDataset(dataset, key)
        self.plan = StagePlan(len(self.dataset), batch_size, clusters, min_group_size, seed)
        self.num_workers, self.loader_args = num_workers, loader_args
        self.sampler = None

    @property
    def pseudo_labels(self) -> np.ndarray | None:
        """The pseudo-labels the current stage trains with (None in stage 1)."""
        return self.plan.pseudo_labels

    def train_dataloader(self) -> DataLoader:
        """This stage's loader: ``batch_sampler`` = the stage's sampler, for this rank."""
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.sampler = self.plan.sampler(rank, world)
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=self.num_workers, **self.loader_args)

    def embedding_dataloader(self, batch_size: int = 512) -> DataLoader:
        """Every training sample once, in order (for the embedding pass before re-clustering)."""
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=self.num_workers)


class MCLCallback(pl.Callback):
    """Reseeds the group sampler every epoch and re-clusters the training set when a stage's fit ends.

    ``embed(module, dataloader)`` returns the ``(N, D)`` embeddings of every training sample, in order, from the
    loader :meth:`MCLDataModule.embedding_dataloader` gives (backbone features, as MCL clusters).
    """

    def __init__(self, embed: Embed) -> None:
        self.embed = embed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``set_epoch`` on the batch sampler: each epoch its own seeded batch order."""
        sampler = getattr(trainer.datamodule, "sampler", None)
        if sampler is not None:
            sampler.set_epoch(trainer.current_epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Embed the training set with the trained stage and re-cluster (the next fit gets the new groups)."""
        data: MCLDataModule = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            embeddings = self.embed(pl_module, data.embedding_dataloader())
        pl_module.train(was_training)
        data.plan.recluster(embeddings)
