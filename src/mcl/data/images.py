"""Where a run's images live: resident (decoded once, on the device) or streamed (decoded per batch).

Residency (``data.residency``):

- ``memory``: the decoded set is one uint8 ``(N, H, W, 3)`` array (memory-mapped cache), copied once
  to the training device; a batch is a gather. The fast path, and what every run did before.
- ``stream``: :class:`DiskImages` keeps paths only; a batch is decoded from the files when it is
  needed, in ``data.workers`` DataLoader processes (PIL: decode and resize there, augmentation stays
  batched on the device). Memory is bounded by the batches in flight, not by N.
- ``auto`` (default): ``memory`` when the decoded set fits ``data.memory_budget_gb`` (default: half
  of the available RAM, from ``/proc/meminfo``, or half of the free memory of the CUDA device that
  will hold it), else ``stream``. :func:`choose_residency` logs the choice and the reason.

:class:`TrainingImages` gives a task both ways through one interface: ``loader(batch_sampler)`` for
training and ``batches(rows)`` for embedding the training set (same chunks either way).

Shard order (``data.shard_order``, streamed WebDataset shards only):

- ``random`` (default): the batch sampler's batches, each sample read at its offset
  (:class:`ShardImages`: random access over all shards).
- ``sequential``: the training batches come from :class:`~mcl.data.stream.GroupBucketingStream`
  built from the sampler's :class:`~mcl.data.loader.BatchSpec` (pseudo-labels or none, batch size,
  seed, rank, world size): shards in a seeded shuffled order, each read front to back, single-group
  batches routed by pseudo-label, every sample exactly once per epoch, the same number of steps.
  Other batches than ``random``'s, so another run; the embedding pass is the same either way.

Example:
    >>> images = training_images(table.images, device, workers=2, seed=1)
    >>> for batch in images.loader(sampler): ...        # {"index", "image"} on the device
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mcl.data.loader import BatchSampler, BatchSpec, DatasetLoader, Loader, TensorLoader
from mcl.data.table.disk import DiskImages
from mcl.errors import ConfigError, DataError

logger = logging.getLogger("mcl")

RESIDENCIES = ("auto", "memory", "stream")
SHARD_ORDERS = ("random", "sequential")
EMBED_CHUNK = 1024  # rows per forward pass when embedding the training set


class ShardImages(DiskImages):
    """:class:`DiskImages` of WebDataset samples: row ``i`` is sample ``i`` of a :class:`ShardIndex`, read at
    its recorded offset (seekable shards) and decoded. Each process opens its own shard handles."""

    def __init__(self, index: Any, size: int, rows: np.ndarray | None = None) -> None:
        self.index, self.size = index, int(size)
        self.paths = index.keys
        self.rows = np.arange(len(index), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self._reader: Any = None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.decode(int(self.rows[key]))
        if torch.is_tensor(key):
            key = key.cpu().numpy()
        return ShardImages(self.index, self.size, self.rows[key])

    def decode(self, row: int) -> np.ndarray:
        """Sample ``row`` as uint8 ``(size, size, 3)``; a bad image is a one-line DataError naming shard and key."""
        from mcl.data.table.decode import failure_reason
        from mcl.data.webdataset import ShardReader, decode_bytes

        if self._reader is None:
            self._reader = ShardReader(self.index)
        data = self._reader.read(row)
        try:
            return decode_bytes(data, self.size)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            raise DataError(f"{self.index.where(row)}: cannot be decoded ({failure_reason(exc)})") from None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}  # open files stay with the process that opened them


class _DecodedBatches:
    """Batched map-style data set for :class:`DatasetLoader`: ``ds[indices] -> {"image": uint8 (B, H, W, 3)}``."""

    def __init__(self, images: DiskImages) -> None:
        self.images = images

    def __getitem__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {"index": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
                "image": torch.from_numpy(np.asarray(self.images[np.asarray(indices)]))}

    def __len__(self) -> int:
        return len(self.images)


class _Chunks:
    """A fixed sequence of index arrays (one epoch, no shuffling): the embedding pass."""

    def __init__(self, chunks: list[np.ndarray]) -> None:
        self.chunks = chunks

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle."""

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def embed_chunks(rows: np.ndarray) -> list[np.ndarray]:
    """How the training set is cut for embedding (the same cut resident and streamed)."""
    return np.array_split(rows, max(1, len(rows) // EMBED_CHUNK))


class TrainingImages:
    """A task's training images, resident on the device or streamed from disk (see the module docstring).

    ``shard_order='sequential'`` needs streamed shards (:class:`ShardImages`); anything else is a
    one-line ConfigError naming ``data.shard_order``.
    """

    def __init__(self, images: np.ndarray | DiskImages, device: torch.device, workers: int = 0,
                 seed: int = 0, shard_order: str = "random") -> None:
        self.device = device
        self.num_samples = len(images)
        self.image_size = int(images.shape[1])
        self.workers, self.seed = workers, seed
        self.streamed = isinstance(images, DiskImages)
        if shard_order not in SHARD_ORDERS:
            raise ConfigError(f"config key 'data.shard_order': expected one of {list(SHARD_ORDERS)}, "
                              f"got {shard_order!r}")
        if shard_order == "sequential" and not isinstance(images, ShardImages):
            what = "an image table or folder" if self.streamed else "decoded into memory"
            raise ConfigError(f"config key 'data.shard_order': 'sequential' reads WebDataset shards streamed "
                              f"(data.residency: stream, data.path: shards); these training images are {what}")
        self.shard_order = shard_order
        if self.streamed:
            self.disk = images
        else:
            # uint8 keeps the whole training set small enough to live on the device.
            self.resident = torch.from_numpy(np.array(images, copy=True)).to(device)

    def loader(self, batch_sampler: BatchSampler) -> Loader:
        """Training batches ``{"index", "image"}`` in the order ``batch_sampler`` draws them.

        With ``shard_order='sequential'`` the batches are the shard stream's, made from the sampler's
        :class:`~mcl.data.loader.BatchSpec` (see the module docstring).
        """
        if self.shard_order == "sequential":
            return self._sequential_loader(batch_sampler)
        if self.streamed:
            return DatasetLoader(_DecodedBatches(self.disk), batch_sampler, self.device, self.workers, self.seed)
        return TensorLoader({"image": self.resident}, batch_sampler, self.device)

    def _sequential_loader(self, batch_sampler: BatchSampler) -> Loader:
        from mcl.data.stream import GroupBucketingStream, StreamLoader

        if not isinstance(batch_sampler, BatchSpec):
            raise TypeError(f"data.shard_order: sequential needs a batch sampler with the BatchSpec facts "
                            f"(pseudo_labels, batch_size, seed, rank, world_size); got {type(batch_sampler).__name__}")
        assert isinstance(self.disk, ShardImages)  # checked in __init__
        # ShardImages' rows are the training samples' ids in the index (increasing): the stream's
        # batch "index" is a position among them, i.e. a training-set row, as the sampler's would be.
        stream = GroupBucketingStream(self.disk.index, self.disk.rows, self.image_size, batch_sampler.batch_size,
                                      batch_sampler.pseudo_labels, batch_sampler.seed, rank=batch_sampler.rank,
                                      world_size=batch_sampler.world_size)
        return StreamLoader(stream, self.device, self.workers, self.seed)

    def batches(self, rows: np.ndarray) -> Iterator[torch.Tensor]:
        """uint8 image batches of ``rows`` (in order, cut by :func:`embed_chunks`) on the device."""
        chunks = embed_chunks(rows)
        if not self.streamed:
            for chunk in chunks:
                yield self.resident[torch.as_tensor(chunk, device=self.device)]
            return
        for batch in DatasetLoader(_DecodedBatches(self.disk), _Chunks(chunks), self.device, self.workers,
                                   self.seed):
            yield batch["image"]


def available_memory_bytes(device: torch.device) -> int:
    """Free memory where the decoded set would live: the CUDA device's, else MemAvailable of /proc/meminfo."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def choose_residency(residency: str, num_images: int, image_size: int, budget_gb: float | None,
                     device: torch.device) -> str:
    """``memory`` or ``stream`` for ``data.residency`` (``auto`` decides by the budget); logs the choice."""
    needed = num_images * image_size * image_size * 3
    if residency != "auto":
        logger.info("data residency: %s (data.residency), decoded set %.2f GB", residency, needed / 1e9)
        return residency
    budget = budget_gb * 1e9 if budget_gb is not None else 0.5 * available_memory_bytes(device)
    chosen = "memory" if needed <= budget else "stream"
    logger.info("data residency: %s (auto: decoded set %.2f GB %s budget %.2f GB%s)", chosen, needed / 1e9,
                "<=" if chosen == "memory" else ">", budget / 1e9,
                "" if budget_gb is not None else ", half the available memory")
    return chosen
