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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("mcl")


def contiguous_labels(values: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Relabel non-negative ints below ``bound`` to ``0..G-1`` in increasing order; returns ``(labels, G)``.

    O(N + bound) with a presence table when ``bound`` is at most a few times N, else a sort.
    """
    values = np.asarray(values, dtype=np.int64)
    if bound > 4 * len(values) + (1 << 16):
        _, inverse = np.unique(values, return_inverse=True)
        return inverse.astype(np.int64).reshape(-1), int(inverse.max(initial=-1)) + 1
    present = np.bincount(values, minlength=bound) > 0
    new_id = np.cumsum(present) - 1
    return new_id[values], int(present.sum())


def combine_cluster_labels(stage_labels: Sequence[np.ndarray], clusters: int | Sequence[int]) -> np.ndarray:
    """Pseudo-labels from the cluster ids of all stages so far, relabelled to ``0..G-1``.

    Mixed radix: ``g = g * K_s + c_s`` over stages s = 1..S, so two samples share a pseudo-label
    only if they shared a cluster in *every* stage (the public reference code keeps only the latest
    stage's clusters). Contiguous ids are assigned in order of the combined code, so the result is
    deterministic. The code is relabelled after every stage (order-preserving), so it stays below
    ``G * K`` and the whole combination is O(N) per stage.
    """
    if not stage_labels:
        raise ValueError("need the cluster labels of at least one stage")
    radices = [clusters] * len(stage_labels) if isinstance(clusters, int) else list(clusters)
    code = np.zeros(len(stage_labels[0]), dtype=np.int64)
    groups = 1
    for labels, radix in zip(stage_labels, radices, strict=True):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != code.shape:
            raise ValueError(f"stage labels have {labels.shape[0]} entries, expected {code.shape[0]}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= radix:
            raise ValueError(f"cluster ids must lie in [0, {radix})")
        code, groups = contiguous_labels(code * radix + labels, groups * radix)
    return code


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
    merged, _ = contiguous_labels(target[pseudo_labels], len(sizes))
    return merged, len(small)


def stable_group_order(labels: np.ndarray) -> np.ndarray:
    """Indices that sort ``labels`` (non-negative ints) stably: LSD radix sort on 16-bit digits, O(N)."""
    labels = np.asarray(labels)
    high = int(labels.max(initial=0))
    order = np.argsort((labels & 0xFFFF).astype(np.uint16), kind="stable")  # numpy radix-sorts 16-bit keys
    shift = 16
    while high >> shift:
        digit = ((labels[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def split_sizes(total: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.array_split`` arithmetic, vectorised: per-piece ``(offset, size)`` for every ``(total, parts)`` pair.

    Pieces of one pair are consecutive in the result; the first ``total % parts`` pieces are one
    larger than the rest.
    """
    owner = np.repeat(np.arange(len(total)), parts)
    position = np.arange(len(owner)) - np.repeat(np.cumsum(parts) - parts, parts)
    quotient, remainder = total[owner] // parts[owner], total[owner] % parts[owner]
    offsets = position * quotient + np.minimum(position, remainder)
    return offsets, quotient + (position < remainder)


@dataclass
class EpochLayout:
    """One epoch's global batches: ``order[starts[b] : starts[b] + sizes[b]]`` is batch ``b``."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: int) -> np.ndarray:
        """Global batch ``index``."""
        return self.order[self.starts[index] : self.starts[index] + self.sizes[index]]


class ClusterBatchSampler:
    """Batches drawn from one pseudo-label group each; every sample exactly once per epoch.

    Each group is shuffled and cut into ``ceil(n / batch_size)`` batches of near-equal size (a
    group's remainder is spread over its batches rather than left as a runt or dropped), and the
    batches of all groups are shuffled together. Everything is seeded by ``(seed, epoch)``:
    call :meth:`set_epoch` each epoch (as with ``DistributedSampler``).

    The samples are sorted by group once (an O(N) radix sort); an epoch then shuffles each group in
    place and computes the batch bounds vectorised: O(N) work with a Python loop over groups (at most
    N / ``mcl.min_group_size`` of them) and none over samples.

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
        self.sizes = np.bincount(self.pseudo_labels)
        present = self.sizes[self.sizes > 0]
        if len(present) and present.min() < world_size:
            raise ValueError(f"a pseudo-label group has {present.min()} samples, fewer than the {world_size} ranks; "
                             "raise mcl.min_group_size to at least the number of processes")
        self.pieces = np.maximum(1, -(-self.sizes // batch_size)) * (self.sizes > 0)
        self._grouped = stable_group_order(self.pseudo_labels)  # members of group 0, then group 1, ...
        self._bounds = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (reproducible) shuffle the next iteration yields."""
        self.epoch = epoch

    def epoch_layout(self) -> EpochLayout:
        """This epoch's global batches, identical on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self._grouped.copy()
        for low, high in zip(self._bounds[:-1], self._bounds[1:], strict=True):
            rng.shuffle(order[low:high])  # in place, one contiguous (cache-friendly) group at a time
        offsets, sizes = split_sizes(self.sizes, self.pieces)
        starts = np.repeat(self._bounds[:-1], self.pieces) + offsets
        batch_order = rng.permutation(len(starts))
        return EpochLayout(order, starts[batch_order], sizes[batch_order])

    def __iter__(self) -> Iterator[np.ndarray]:
        layout = self.epoch_layout()
        offsets, sizes = split_sizes(layout.sizes, np.full(len(layout), self.world_size))
        mine = np.arange(len(layout)) * self.world_size + self.rank
        for start, offset, size in zip(layout.starts.tolist(), offsets[mine].tolist(), sizes[mine].tolist(),
                                       strict=True):
            yield layout.order[start + offset : start + offset + size]

    def __len__(self) -> int:
        return int(self.pieces.sum())


class RandomBatchSampler:
    """Ordinary shuffled batches (stage 1, and ``mask`` mode); every sample once per epoch.

    The last batch is spread like :class:`ClusterBatchSampler`'s (near-equal sizes), never dropped.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self._inner = ClusterBatchSampler(np.zeros(size, dtype=np.int64), batch_size, seed, rank, world_size)
        # The same public facts as ClusterBatchSampler (mcl.data.loader.BatchSpec), no groups.
        self.pseudo_labels: np.ndarray | None = None
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle."""
        self._inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)
