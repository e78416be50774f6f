"""Feature-aware negative sampling: the single-group batch planner and the batch samplers built on it.

After stages 1..s, a sample's pseudo-label (:mod:`mcl.pseudolabels`) is the combination of its cluster ids
from *all* of those stages. In stage s+1 its negatives come only from samples with the same pseudo-label, so a
feature that earlier stages already learned (and that the clusters therefore follow) can no longer tell anchor
and negatives apart; the model has to learn something else.

Two ways to restrict the negatives (config ``mcl.negatives``):

- ``batch``: every batch comes from one pseudo-label group.
- ``mask``: ordinary random batches (:class:`RandomBatchSampler`); the loss masks out candidates of other groups.

**The single-group batch planner.** One epoch's *global* batches, each from one group, every sample in exactly
one of them; under DDP every rank plans the same batches and takes its own near-equal slice of each
(:func:`rank_slices`), so each step's gathered negatives stay in-group and, across ranks, every sample is still
seen once. No batch, and no group's last batch, may be smaller than the number of ranks (every slice non-empty;
:func:`check_group_sizes` refuses a group smaller than that). The planner cuts a group in one of two ways:

- whole groups at once (:class:`ClusterBatchSampler`, data with random access): each group is shuffled and cut
  into ``ceil(n / batch_size)`` near-equal batches (a remainder is spread, never left as a runt), and the
  batches of all groups are shuffled together;
- one sample at a time (:class:`GroupBuffers`, used by :func:`mcl.data.stream.plan_epoch` for shards read in
  order): a sample joins its group's buffer, which becomes a batch once it holds ``batch_size`` samples; the
  remainders leave at the end of the pass, and a cap on the buffered samples emits the fullest buffer early.

Where every group fits in one batch the two agree: one batch per group.

Example:
    >>> sampler = ClusterBatchSampler(pseudo_labels, batch_size=256, seed=0)
    >>> sampler.set_epoch(0)
    >>> batches = list(sampler)          # index arrays, each from one group
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def check_group_sizes(sizes: np.ndarray, world_size: int) -> None:
    """Refuse a pseudo-label group (``sizes``: samples per group, zeros ignored) smaller than the number of ranks."""
    present = np.asarray(sizes)[np.asarray(sizes) > 0]
    if len(present) and present.min() < world_size:
        raise ValueError(f"a pseudo-label group has {present.min()} samples, fewer than the {world_size} ranks; "
                         "raise mcl.min_group_size to at least the number of processes")


def rank_slices(sizes: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Offset and size of ``rank``'s slice of each global batch of ``sizes`` samples: ``np.array_split``'s
    near-equal slices, so the ranks' slices partition every batch."""
    offsets, lengths = split_sizes(np.asarray(sizes), np.full(len(sizes), world_size))
    mine = np.arange(len(sizes)) * world_size + rank
    return offsets[mine], lengths[mine]


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


class GroupBuffers:
    """The planner's one-sample-at-a-time cut: group buffers that become single-group global batches.

    :meth:`add` puts a sample into its group's buffer; a buffer holding ``batch_size`` samples leaves as one
    batch, and while the buffers together hold more than ``cap`` samples the fullest one leaves early. A batch
    never leaves a group with fewer than ``world_size`` samples to come (it waits for up to ``world_size - 1``
    more instead), so every rank's slice of every batch is non-empty. :meth:`flush` empties the remaining
    buffers at the end of the pass. The batches accumulate in emission order in :attr:`batches`, each with the
    read index after which it is complete (:attr:`ready`) and its group (:attr:`groups`).

    Example:
        >>> buffers = GroupBuffers(np.bincount(labels), batch_size=4, world_size=1, cap=len(labels))
        >>> for t, group in enumerate(labels):
        ...     buffers.add(t, int(group), ready=t)
        >>> buffers.flush(buffers.pending(), ready=len(labels))
        >>> sum(len(batch) for batch in buffers.batches) == len(labels)
        True
    """

    def __init__(self, group_sizes: np.ndarray, batch_size: int, world_size: int, cap: int) -> None:
        check_group_sizes(group_sizes, world_size)
        self.remaining: list[int] = np.asarray(group_sizes, dtype=np.int64).tolist()  # samples not yet in a batch
        self.batch_size, self.world_size, self.cap = batch_size, world_size, cap
        self.buffers: dict[int, list[int]] = {}
        self.held = 0  # samples in the group buffers
        self.high_water = 0  # most samples held at once, counting those the caller holds outside (``add``)
        self.early_flushes = 0
        self.batches: list[list[int]] = []
        self.ready: list[int] = []
        self.groups: list[int] = []

    def add(self, sample: int, group: int, ready: int, outside: int = 0) -> None:
        """Buffer ``sample`` of ``group``; emit what became complete (``ready``: the read index it completes at;
        ``outside``: samples the caller holds elsewhere, e.g. in a shuffle buffer, for :attr:`high_water`)."""
        buffer = self.buffers.setdefault(group, [])
        buffer.append(sample)
        self.held += 1
        self.high_water = max(self.high_water, outside + self.held)
        if len(buffer) >= self.batch_size and self._emittable(group, len(buffer)):
            self._emit(group, ready)
        while self.held > self.cap:
            candidates = sorted(self.buffers, key=lambda g: -len(self.buffers[g]))
            target = next((g for g in candidates if self._emittable(g, len(self.buffers[g]))), None)
            if target is None:
                break  # only possible with world_size > 1 and tiny buffers: exceed the cap rather than misalign
            self._emit(target, ready)
            self.early_flushes += 1

    def pending(self) -> list[int]:
        """Groups with buffered samples, in increasing order."""
        return sorted(self.buffers)

    def flush(self, groups: list[int], ready: int) -> None:
        """Emit the buffers of ``groups`` (e.g. :meth:`pending` in a shuffled order), one batch each."""
        for group in groups:
            self._emit(group, ready)

    def _emittable(self, group: int, size: int) -> bool:
        # Never leave a group with fewer than world_size samples: every rank's slice must be non-empty.
        left = self.remaining[group] - size
        return size >= self.world_size and not 0 < left < self.world_size

    def _emit(self, group: int, ready: int) -> None:
        batch = self.buffers.pop(group)
        self.held -= len(batch)
        self.remaining[group] -= len(batch)
        self.batches.append(batch)
        self.ready.append(ready)
        self.groups.append(group)


class ClusterBatchSampler:
    """Batches drawn from one pseudo-label group each (the planner's whole-group cut); every sample exactly once
    per epoch.

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
        check_group_sizes(self.sizes, world_size)
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
        offsets, sizes = rank_slices(layout.sizes, self.rank, self.world_size)
        for start, offset, size in zip(layout.starts.tolist(), offsets.tolist(), sizes.tolist(), strict=True):
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
