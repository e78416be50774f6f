"""MCL inside other training frameworks: PyTorch Lightning (:mod:`~mcl.integrations.lightning`) and the
Hugging Face ``Trainer`` (:mod:`~mcl.integrations.huggingface`).

Each keeps the framework's own loop and adds what MCL needs: single-group batches from
:class:`~mcl.sampling.ClusterBatchSampler` (reseeded every epoch with ``set_epoch``) and re-clustering of
the training set's embeddings between stages (:class:`~mcl.pseudolabels.PseudoLabeller`). The framework is
imported only by its own module.
"""

from __future__ import annotations

from mcl.integrations.plan import IndexedDataset, StagePlan

__all__ = ["IndexedDataset", "StagePlan"]
