"""MCL inside other training frameworks: PyTorch Lightning (:mod:`~mcl.integrations.lightning`) and the
Hugging Face ``Trainer`` (:mod:`~mcl.integrations.huggingface`).

Each keeps the framework's own loop and adds what MCL needs: single-group batches from
:class:`~mcl.sampling.ClusterBatchSampler` (reseeded every epoch with ``set_epoch``) and re-clustering of
the training set's embeddings between stages (:class:`~mcl.pseudolabels.PseudoLabeller`). The framework is
imported only by its own module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mcl.pseudolabels import PseudoLabeller, cluster_stage
from mcl.sampling import ClusterBatchSampler, RandomBatchSampler

__all__ = ["IndexedDataset", "StagePlan"]


class IndexedDataset(Dataset):
    """``dataset[i]`` as ``{"index": i, <key>: item}``: the batch carries the sample ids pseudo-labels are keyed by.

    A dict item is merged (``{"index": i, **item}``); any other item is stored under ``key``.
    """

    def __init__(self, dataset: Dataset, key: str = "input") -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        return {"index": index, **item} if isinstance(item, dict) else {"index": index, self.key: item}


class StagePlan:
    """The MCL state between stages: the pseudo-labels so far and the batch sampler of the next stage.

    Stage 1 gets seeded random batches; after :meth:`recluster` with a stage's ``(N, D)`` embeddings of the
    training set (k-means, combined with every earlier stage, small groups merged), the next stage gets
    single-group batches. ``rank`` / ``world_size``: under DDP ``batch_size`` is the global batch and each rank
    takes its slice of every batch (all ranks draw from the same group at each step).

    Example:
        >>> plan = StagePlan(n=1000, batch_size=64, clusters=10, min_group_size=32)
        >>> sampler = plan.sampler()              # stage 1: random batches
        >>> plan.recluster(embeddings)            # after stage 1
        >>> sampler = plan.sampler()              # stage 2: every batch from one group
    """

    def __init__(self, n: int, batch_size: int, clusters: int = 10, min_group_size: int = 32, seed: int = 0) -> None:
        self.n, self.batch_size, self.clusters, self.seed = n, batch_size, clusters, seed
        self.labeller = PseudoLabeller(min_group_size=min_group_size)
        self.pseudo_labels: np.ndarray | None = None
        self.stage = 1

    def sampler(self, rank: int = 0, world_size: int = 1) -> ClusterBatchSampler | RandomBatchSampler:
        """This stage's batch sampler (call ``set_epoch(epoch)`` on it before every epoch)."""
        seed = 1000 * self.seed + self.stage
        if self.pseudo_labels is None:
            return RandomBatchSampler(self.n, self.batch_size, seed=seed, rank=rank, world_size=world_size)
        return ClusterBatchSampler(self.pseudo_labels, self.batch_size, seed=seed, rank=rank, world_size=world_size)

    def recluster(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Cluster a finished stage's ``(N, D)`` embeddings; returns the next stage's pseudo-labels."""
        if torch.is_tensor(embeddings):
            embeddings = embeddings.detach().float().cpu().numpy()
        if len(embeddings) != self.n:
            raise ValueError(f"expected embeddings of all {self.n} training samples, got {len(embeddings)}")
        clusters = cluster_stage(embeddings, clusters=self.clusters, seed=1000 * self.seed + self.stage)
        self.pseudo_labels = self.labeller.add_stage(clusters.labels, clusters.centroids)
        self.stage += 1
        return self.pseudo_labels
