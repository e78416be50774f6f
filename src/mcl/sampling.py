"""Feature-aware negative sampling: pseudo-labels and the batches drawn from them.

After stages 1..s, a sample's pseudo-label is the combination of its cluster ids from *all* of
those stages. In stage s+1 its negatives come only from samples with the same pseudo-label, so a
feature that earlier stages already learned (and that the clusters therefore follow) can no longer
tell anchor and negatives apart; the model has to learn something else.

Two ways to restrict the negatives (config ``mcl.negatives``):

- ``batch``: :class:`ClusterBatchSampler` makes every batch come from one pseudo-label group.
- ``mask``: ordinary random batches; the loss masks out candidates of other groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np

logger = logging.getLogger("mcl")


def combine_cluster_labels(stage_labels: Sequence[np.ndarray], clusters: int | Sequence[int]) -> np.ndarray:
    """Pseudo-labels from the cluster ids of all stages so far, relabelled to ``0..G-1``.

    Mixed radix: ``g = g * K_s + c_s`` over stages s = 1..S, so two samples share a pseudo-label
    only if they shared a cluster in *every* stage (the public reference code keeps only the latest
    stage's clusters). Contiguous ids are assigned in order of the combined code, so the result is
    deterministic.
    """
    if not stage_labels:
        raise ValueError("need the cluster labels of at least one stage")
    radices = [clusters] * len(stage_labels) if isinstance(clusters, int) else list(clusters)
    code = np.zeros(len(stage_labels[0]), dtype=np.int64)
    for labels, radix in zip(stage_labels, radices, strict=True):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != code.shape:
            raise ValueError(f"stage labels have {labels.shape[0]} entries, expected {code.shape[0]}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= radix:
            raise ValueError(f"cluster ids must lie in [0, {radix})")
        code = code * radix + labels
    _, contiguous = np.unique(code, return_inverse=True)
    return contiguous.astype(np.int64)


def group_centroids(stage_labels: Sequence[np.ndarray], stage_centroids: Sequence[np.ndarray],
                    pseudo_labels: np.ndarray) -> np.ndarray:
    """Centroid of each pseudo-label group: its clusters' centroids from every stage, concatenated."""
    groups = int(pseudo_labels.max()) + 1
    first_member = np.zeros(groups, dtype=np.int64)
    first_member[pseudo_labels[::-1]] = np.arange(len(pseudo_labels))[::-1]
    parts = [np.asarray(centroids)[np.asarray(labels)[first_member]]
             for labels, centroids in zip(stage_labels, stage_centroids, strict=True)]
    return np.concatenate(parts, axis=1)


def merge_small_groups(pseudo_labels: np.ndarray, centroids: np.ndarray, min_group_size: int) -> tuple[np.ndarray, int]:
    """Merge every group smaller than ``min_group_size`` into the nearest large group (by centroid).

    Small groups give too few in-group negatives (and tiny batches); merging keeps every sample
    in training instead of dropping it as the reference code does. Returns contiguous labels and
    the number of groups merged. If no group is large enough, everything becomes one group.
    """
    sizes = np.bincount(pseudo_labels)
    small = np.flatnonzero(sizes < min_group_size)
    if len(small) == 0:
        return pseudo_labels.copy(), 0
    large = np.flatnonzero(sizes >= min_group_size)
    if len(large) == 0:
        return np.zeros_like(pseudo_labels), len(sizes) - 1 if len(sizes) > 1 else 0
    distances = ((centroids[small, None, :] - centroids[None, large, :]) ** 2).sum(-1)
    target = np.arange(len(sizes))
    target[small] = large[distances.argmin(axis=1)]
    _, contiguous = np.unique(target[pseudo_labels], return_inverse=True)
    return contiguous.astype(np.int64), len(small)


def group_members(pseudo_labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each group, in one O(N log N) sort instead of a loop per group."""
    order = np.argsort(pseudo_labels, kind="stable")
    boundaries = np.flatnonzero(np.diff(pseudo_labels[order])) + 1
    return np.split(order, boundaries)


class ClusterBatchSampler:
    """Batches drawn from one pseudo-label group each; every sample exactly once per epoch.

    Each group is shuffled and cut into ``ceil(n / batch_size)`` batches of near-equal size (a
    group's remainder is spread over its batches rather than left as a runt or dropped), and the
    batches of all groups are shuffled together. Everything is seeded by ``(seed, epoch)``:
    call :meth:`set_epoch` each epoch (as with ``DistributedSampler``).

    Under DDP, ``batch_size`` is the *global* batch: every rank iterates the same global batches and
    takes its own slice of each, so at every step all ranks draw from the same group and gathered
    negatives stay in-group; the slices partition the batch, so across ranks each sample is still
    seen exactly once per epoch.

    Example:
        >>> sampler = ClusterBatchSampler(pseudo_labels, batch_size=256, seed=0)
        >>> for epoch in range(epochs):
        ...     sampler.set_epoch(epoch)
        ...     for indices in sampler:
        ...         train_step(images[indices], pseudo_labels[indices])
    """

    def __init__(self, pseudo_labels: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.pseudo_labels = np.asarray(pseudo_labels, dtype=np.int64)
        if batch_size < world_size:
            raise ValueError(f"global batch size {batch_size} is smaller than the world size {world_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._groups = group_members(self.pseudo_labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (reproducible) shuffle the next iteration yields."""
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches, identical on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[np.ndarray] = []
        for members in self._groups:
            shuffled = members[rng.permutation(len(members))]
            pieces = max(1, math.ceil(len(shuffled) / self.batch_size))
            batches.extend(np.array_split(shuffled, pieces))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.global_batches():
            yield np.array_split(batch, self.world_size)[self.rank]

    def __len__(self) -> int:
        return sum(max(1, math.ceil(len(m) / self.batch_size)) for m in self._groups)


class RandomBatchSampler:
    """Ordinary shuffled batches (stage 1, and ``mask`` mode); every sample once per epoch.

    The last batch is spread like :class:`ClusterBatchSampler`'s (near-equal sizes), never dropped.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self._inner = ClusterBatchSampler(np.zeros(size, dtype=np.int64), batch_size, seed, rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle."""
        self._inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)
