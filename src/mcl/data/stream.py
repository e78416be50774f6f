"""Feature-aware (single-group) batches from a sequential stream of WebDataset shards.

:class:`GroupBucketingStream` is a :class:`torch.utils.data.IterableDataset` yielding batches
``{"index": (b,) int64, "image": (b, size, size, 3) uint8}``, where ``index`` is a *position* in the
``ids`` it streams (e.g. ``index.ids("train")``), so pseudo-labels of length ``len(ids)`` line up.

Algorithm, per epoch (everything seeded by ``(seed, epoch)``):

1. **Read order**: shards in a shuffled order, each read front to back (samples in id order).
2. **Shuffle buffer** (``shuffle_buffer`` samples): each sample read enters it; once full, a random
   one leaves it (the classic bounded streaming shuffle). Without pseudo-labels (stage 1, or
   ``mcl.negatives: mask``) this is the whole story: samples leave in a shuffled order and are cut
   into batches of ``batch_size``.
3. **Routing** (with pseudo-labels): a sample leaving the shuffle buffer joins its group's buffer;
   a group's buffer becomes one single-group batch when it holds ``batch_size`` samples. At the end
   of the pass the remaining buffers become smaller batches, so every sample is in exactly one batch.
   If the group buffers together exceed ``max_buffered`` samples, the fullest one is emitted early
   (still single-group, still exactly once).

Buffers hold *encoded* bytes, decoded only when their batch is emitted. Memory bound, in samples:
``shuffle_buffer + min(groups x batch_size, max_buffered)`` (plus ``groups x (world_size - 1)`` under
DDP, see below); times the mean encoded size (~2-30 KB per JPEG) that is what one epoch holds,
whatever N is. The bound, the cap and the epoch's high-water mark are logged by :meth:`GroupBucketingStream.set_epoch`.

**Plan first, read second.** Steps 1-3 only need the index metadata (shard of each sample and its
pseudo-label), so :meth:`set_epoch` simulates them in the main process (O(N) Python: 2.6-3.5 s
per million samples on a loaded 2-core machine; O(groups) extra per early flush) and gets the exact
list of global batches in emission order, each tagged with the read position after which it is
complete. Hence an exact ``__len__`` (the LR schedule's step count), and the readers then only
execute the plan:

- **DataLoader workers**: worker ``w`` of ``W`` produces global batches ``w, w + W, ...``; the
  DataLoader's round-robin over workers restores the plan's order. Each worker reads, in read order,
  only the image bytes of its own batches (forward seeks within a shard), holding each sample's bytes
  until its batch is complete.
- **DDP (decision)**: every rank computes the same plan, so *every step's global batch is single-group*
  with no communication: rank ``r`` of ``R`` takes slice ``r`` of each global batch (near-equal slices,
  as :class:`~mcl.sampling.ClusterBatchSampler` does), and all ranks have the same number of steps.
  The slices partition each batch, so across ranks every sample is still read and used exactly once
  per epoch; each rank reads 1/R of the bytes, from every shard (the sources are seekable files; a
  rank does not own whole shards). The loss needs no masking. A group's batch never leaves fewer than
  ``R`` of its samples behind (it grows by up to ``R - 1`` instead), so every slice is non-empty;
  a group smaller than ``R`` is a ValueError (raise ``mcl.min_group_size``).

Use :class:`StreamLoader` (the loader interface of :mod:`mcl.data.loader`) to train from it; ``mcl train``
does with ``data.shard_order: sequential`` (:class:`mcl.data.images.TrainingImages` builds the stream from
the stage's batch sampler: its pseudo-labels or none, batch size, seed, rank and world size).

Example::

    index = index_shards("shards/")
    stream = GroupBucketingStream(index, index.ids("train"), image_size=64, batch_size=256,
                                  pseudo_labels=labels, seed=1, rank=rank, world_size=world)
    loader = StreamLoader(stream, device, workers=2)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:  # len(loader) steps, single-group batches
            ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from mcl.data.loader import Batch, batch_dataloader, to_device
from mcl.data.webdataset import DecodeStats, ShardIndex, ShardReader, decode_samples
from mcl.errors import ConfigError
from mcl.sampling import GroupBuffers, rank_slices

logger = logging.getLogger("mcl")


@dataclass
class EpochPlan:
    """One epoch's global batches: ``members[starts[b] : starts[b] + sizes[b]]`` (positions into ``ids``).

    ``read_order`` lists the positions in the order the stream reads them; batch ``b`` is complete once
    read index ``ready[b]`` has been read (``len(read_order)`` for batches emitted at the end of the pass).
    ``high_water`` is the most samples held at once (shuffle buffer + group buffers).
    """

    read_order: np.ndarray
    members: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    ready: np.ndarray
    groups: np.ndarray
    high_water: int
    early_flushes: int

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, b: int) -> np.ndarray:
        """Global batch ``b`` (positions into ``ids``)."""
        return self.members[self.starts[b] : self.starts[b] + self.sizes[b]]


def plan_epoch(shard_of: np.ndarray, labels: np.ndarray | None, batch_size: int, seed: int, epoch: int,
               shuffle: bool = True, shuffle_buffer: int = 0, max_buffered: int | None = None,
               world_size: int = 1) -> EpochPlan:
    """Simulate one epoch of the stream (see the module docstring) from metadata alone: the read order and the
    shuffle buffer here, the single-group batches by the planner's :class:`~mcl.sampling.GroupBuffers`.

    ``shard_of[p]`` is the shard of position ``p`` (non-decreasing: positions are in id order);
    ``labels[p]`` its pseudo-label (None: one group). Deterministic in ``(seed, epoch)``.
    """
    n = len(shard_of)
    rng = np.random.default_rng([seed, epoch])
    bounds = np.flatnonzero(np.diff(shard_of)) + 1
    pieces = np.split(np.arange(n, dtype=np.int64), bounds)
    if shuffle:
        pieces = [pieces[i] for i in rng.permutation(len(pieces))]
    read_order = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    label_of = (np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64))[read_order]
    cap = n if max_buffered is None else max(max_buffered, world_size)
    buffers = GroupBuffers(np.bincount(label_of) if n else np.zeros(0, dtype=np.int64), batch_size, world_size, cap)
    capacity = shuffle_buffer if shuffle else 0
    picks = rng.integers(0, max(capacity, 1), size=n).tolist()
    labels_list = label_of.tolist()
    shuffled: list[int] = []  # the shuffle buffer (read indices)
    high_water = 0
    for t in range(n):
        if capacity:
            shuffled.append(t)
            high_water = max(high_water, len(shuffled) + buffers.held)
            if len(shuffled) < capacity:
                continue
            j = picks[t] % len(shuffled)
            shuffled[j], shuffled[-1] = shuffled[-1], shuffled[j]
            leaving = shuffled.pop()
            buffers.add(leaving, labels_list[leaving], t, outside=len(shuffled))
        else:
            buffers.add(t, labels_list[t], t)
    shuffled[:] = [shuffled[j] for j in rng.permutation(len(shuffled)).tolist()]
    while shuffled:  # drain: whatever is still in the shuffle buffer leaves in random order
        leaving = shuffled.pop()
        buffers.add(leaving, labels_list[leaving], n, outside=len(shuffled))
    if buffers.pending():  # the end of the pass: the remainders, in random group order
        buffers.flush(rng.permutation(buffers.pending()).tolist(), n)
    sizes = np.asarray([len(m) for m in buffers.batches], dtype=np.int64)
    members = read_order[np.concatenate(buffers.batches)] if buffers.batches else np.zeros(0, dtype=np.int64)
    return EpochPlan(read_order=read_order, members=members, starts=np.cumsum(sizes) - sizes, sizes=sizes,
                     ready=np.asarray(buffers.ready, dtype=np.int64), groups=np.asarray(buffers.groups, dtype=np.int64),
                     high_water=int(max(high_water, buffers.high_water)), early_flushes=buffers.early_flushes)


@dataclass
class StreamStats:
    """What one process's iteration held and skipped (visible in the main process only with 0 workers)."""

    high_water_samples: int = 0
    high_water_bytes: int = 0
    decode: DecodeStats = field(default_factory=DecodeStats)


class GroupBucketingStream(torch.utils.data.IterableDataset):
    """Single-group (or plain shuffled) batches streamed from indexed shards; see the module docstring.

    Args:
        index: the shards' :class:`~mcl.data.webdataset.ShardIndex`.
        ids: sample ids to stream, increasing (e.g. ``index.ids("train")``); batches index into them.
        image_size: decoded images are ``(image_size, image_size, 3)`` uint8.
        batch_size: the *global* batch size (split over ``world_size`` ranks).
        pseudo_labels: one group id per position (None: plain shuffled batches).
        shuffle: shuffle shard order and use the shuffle buffer (False: id order, e.g. to embed).
        shuffle_buffer: samples in the shuffle buffer (default ``max(4 * batch_size, 1024)``, capped at N).
        max_buffered: cap on samples in the group buffers (default: none, i.e. ``groups x batch_size``).
        rank, world_size: this process's slice of every global batch.
        on_bad_image: ``'error'`` (DataError naming shard and key) or ``'skip'`` (left out of its batch).
    """

    def __init__(self, index: ShardIndex, ids: np.ndarray, image_size: int, batch_size: int,
                 pseudo_labels: np.ndarray | None = None, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int | None = None, max_buffered: int | None = None, rank: int = 0,
                 world_size: int = 1, on_bad_image: str = "error", max_pixels: int | None = None) -> None:
        super().__init__()
        self.index = index
        self.ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0 or np.any(np.diff(self.ids) <= 0):
            raise ValueError("ids must be non-empty and strictly increasing")
        if batch_size < world_size:
            raise ConfigError(f"batch_size: global batch size {batch_size} is smaller than the world size {world_size}")
        if pseudo_labels is not None and len(pseudo_labels) != len(self.ids):
            raise ValueError(f"{len(pseudo_labels)} pseudo-labels for {len(self.ids)} streamed samples")
        if max_buffered is not None and max_buffered < 1:
            raise ConfigError(f"max_buffered: got {max_buffered}; expected a positive number of samples")
        self.image_size, self.batch_size, self.seed, self.shuffle = image_size, batch_size, seed, shuffle
        self.pseudo_labels = None if pseudo_labels is None else np.asarray(pseudo_labels, dtype=np.int64)
        default_buffer = max(4 * batch_size, 1024)
        self.shuffle_buffer = min(len(self.ids), default_buffer if shuffle_buffer is None else shuffle_buffer)
        self.max_buffered = max_buffered
        self.rank, self.world_size = rank, world_size
        self.on_bad_image, self.max_pixels = on_bad_image, max_pixels
        self.epoch = 0
        self.stats = StreamStats()
        self._shard_of = index.shard[self.ids]
        self._plan: tuple[int, EpochPlan] | None = None

    def bound(self) -> int:
        """Most samples an epoch may hold (shuffle buffer + group buffers), before the ``world_size - 1`` slack."""
        groups = 1 if self.pseudo_labels is None else len(np.unique(self.pseudo_labels))
        group_bound = groups * self.batch_size
        if self.max_buffered is not None:
            group_bound = min(group_bound, self.max_buffered)
        return (self.shuffle_buffer if self.shuffle else 0) + group_bound

    def plan(self) -> EpochPlan:
        """This epoch's plan (computed once per epoch, identical on every rank and worker)."""
        if self._plan is None or self._plan[0] != self.epoch:
            plan = plan_epoch(self._shard_of, self.pseudo_labels, self.batch_size, self.seed, self.epoch,
                              self.shuffle, self.shuffle_buffer, self.max_buffered, self.world_size)
            self._plan = (self.epoch, plan)
            logger.info("stream epoch %d: %d samples -> %d batches of <= %d; buffer bound %d samples (%s), "
                        "high-water %d, early flushes %d", self.epoch, len(self.ids), len(plan), self.batch_size,
                        self.bound(), "capped" if self.max_buffered is not None else "groups x batch size",
                        plan.high_water, plan.early_flushes)
        return self._plan[1]

    def set_epoch(self, epoch: int) -> None:
        """Select (and plan, in this process) the epoch the next iteration yields."""
        self.epoch = epoch
        self.plan()

    def __len__(self) -> int:
        return len(self.plan())

    def _mine(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """This rank's and worker's batches (plan indices) and its slice of each."""
        plan = self.plan()
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        mine = np.arange(worker, len(plan), workers)
        offsets, sizes = rank_slices(plan.sizes[mine], self.rank, self.world_size)
        starts = plan.starts[mine] + offsets
        return mine, [plan.members[s : s + k] for s, k in zip(starts.tolist(), sizes.tolist(), strict=True)]

    def __iter__(self) -> Iterator[Batch]:
        plan = self.plan()
        mine, slices = self._mine()
        read_index = np.empty(len(plan.read_order), dtype=np.int64)
        read_index[plan.read_order] = np.arange(len(plan.read_order))
        needed = np.sort(read_index[np.concatenate(slices)]) if slices else np.zeros(0, dtype=np.int64)
        ready = plan.ready[mine].tolist()
        reader = ShardReader(self.index)
        held: dict[int, bytes] = {}
        held_bytes = 0
        stats = self.stats = StreamStats()
        next_batch = 0
        try:
            for t in needed.tolist():
                while next_batch < len(slices) and ready[next_batch] < t:
                    held_bytes -= sum(len(held[p]) for p in slices[next_batch].tolist())
                    yield self._decode(slices[next_batch], held, stats)
                    next_batch += 1
                position = int(plan.read_order[t])
                data = reader.read(int(self.ids[position]))
                held[position] = data
                held_bytes += len(data)
                stats.high_water_samples = max(stats.high_water_samples, len(held))
                stats.high_water_bytes = max(stats.high_water_bytes, held_bytes)
            while next_batch < len(slices):  # the end of the pass: the remainders
                yield self._decode(slices[next_batch], held, stats)
                next_batch += 1
        finally:
            reader.close()

    def _decode(self, positions: np.ndarray, held: dict[int, bytes], stats: StreamStats) -> Batch:
        blobs = [held.pop(p) for p in positions.tolist()]
        keep, images = decode_samples(self.index, self.ids[positions], blobs, self.image_size, self.on_bad_image,
                                      stats.decode, self.max_pixels)
        return {"index": torch.from_numpy(positions[keep]), "image": torch.from_numpy(images[keep])}


class StreamLoader:
    """The loader interface (:mod:`mcl.data.loader`) over a :class:`GroupBucketingStream`.

    A :class:`~torch.utils.data.DataLoader` with ``workers`` processes (0: this one), pinned memory on
    CUDA and ``prefetch`` batches per worker; batches arrive in the plan's order whatever ``workers``
    is, so a run is reproducible for any number of workers. ``len()`` is exact.
    """

    def __init__(self, stream: GroupBucketingStream, device: torch.device | str, workers: int = 0,
                 seed: int = 0, prefetch: int = 2) -> None:
        self.stream = stream
        self.device = torch.device(device)
        self.loader = batch_dataloader(stream, self.device, workers, seed, prefetch)

    def set_epoch(self, epoch: int) -> None:
        """Plan ``epoch`` (workers receive the plan when the next iteration starts them)."""
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[Batch]:
        return to_device(self.loader, self.device)
