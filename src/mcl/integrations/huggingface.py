"""MCL with the Hugging Face ``Trainer``: a ``Trainer`` whose training batches come from one pseudo-label group.

:class:`MCLTrainer` overrides ``get_train_dataloader`` to serve the stage's batch sampler
(:class:`~mcl.integrations.StagePlan`: random batches in stage 1, single-group batches after) with the
trainer's collator, and reseeds it every epoch through a callback (``set_epoch``). The dataset's items become
``{"index": i, ...}`` (:class:`~mcl.integrations.IndexedDataset`), so the model's ``forward`` gets the sample
ids too. One ``train()`` per stage; :meth:`MCLTrainer.recluster` between them. Use
``remove_unused_columns=False`` in the ``TrainingArguments`` and one process (``Trainer`` under
``torchrun`` shards batches itself; use :class:`~mcl.sampling.ClusterBatchSampler` with ``rank`` there).

Example:
    >>> plan = StagePlan(len(dataset), batch_size=256, clusters=10)
    >>> for stage in range(3):
    ...     trainer = MCLTrainer(plan=plan, model=MyContrastiveModel(), args=args, train_dataset=dataset)
    ...     trainer.train()
    ...     plan.recluster(embed(trainer.model, dataset))
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from mcl.integrations import IndexedDataset, StagePlan

__all__ = ["MCLTrainer"]


class _SetEpoch(TrainerCallback):
    """``set_epoch`` on the group sampler at every epoch start."""

    def __init__(self, trainer: MCLTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Reseed the batch order for this epoch."""
        if self.trainer.sampler is not None:
            self.trainer.sampler.set_epoch(int(state.epoch or 0))


class MCLTrainer(Trainer):
    """``transformers.Trainer`` with MCL's batches: pass ``plan`` (a :class:`StagePlan`) beside the usual arguments."""

    def __init__(self, *args: Any, plan: StagePlan, key: str = "input", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.sampler = None
        self.indexed = IndexedDataset(self.train_dataset, key)
        self.add_callback(_SetEpoch(self))

    def get_train_dataloader(self) -> DataLoader:
        """The stage's batch sampler over the indexed training set, with the trainer's collator."""
        self.sampler = self.plan.sampler()
        return DataLoader(self.indexed, batch_sampler=self.sampler, collate_fn=self.data_collator,
                          num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)

    def recluster(self, embeddings: Any) -> Any:
        """Cluster the finished stage's ``(N, D)`` embeddings into the next stage's pseudo-labels."""
        return self.plan.recluster(embeddings)
