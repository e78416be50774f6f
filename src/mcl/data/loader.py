"""Loaders: how the trainer receives batches. The data seam between a data set and a stage.

A loader yields batches as dicts of tensors on the training device, always with ``"index"``:

    {"index": (B,) int64 sample ids, "image": (B, H, W, 3) uint8, ...}

Per-sample side data (pseudo-labels, tokenized captions) is looked up by ``batch["index"]``, as
solo-learn does, so a reordering can never misalign it. Which samples form a batch is the batch
sampler's business (:mod:`mcl.sampling`: MCL's single-group batches or plain shuffled ones);
:meth:`Loader.set_epoch` reaches it, as open_clip's ``DataInfo.set_epoch`` does.

Two loaders share that interface:

- :class:`TensorLoader`, the fast in-memory path: the whole set lives on the device as uint8 and a
  batch is one gather (no copies, no workers; what every run used before loaders existed, bit for bit);
- :class:`DatasetLoader`, a :class:`torch.utils.data.DataLoader` over a *batched* map-style data set
  (``dataset[indices] -> dict of stacked tensors``) with the MCL sampler as its sampler, worker
  processes, per-worker seeds and pinned memory: for data decoded on the fly.

Example::

    sampler = ClusterBatchSampler(pseudo_labels, batch_size=256, seed=1)
    loader = TensorLoader({"image": images_uint8}, sampler, device)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            loss = task.loss(model, batch, pseudo_labels[batch["index"]])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from mcl.errors import MCLError

Batch = dict[str, torch.Tensor]


class BatchSampler(Protocol):
    """Yields index arrays; reshuffles on :meth:`set_epoch`."""

    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[np.ndarray]: ...
    def __len__(self) -> int: ...


@runtime_checkable
class BatchSpec(Protocol):
    """What a batch sampler's batches are made of, for a loader that forms the batches itself.

    :class:`~mcl.sampling.ClusterBatchSampler` and :class:`~mcl.sampling.RandomBatchSampler` expose it;
    a loader that reads shards in its own order (``data.shard_order: sequential``,
    :class:`~mcl.data.stream.GroupBucketingStream`) builds the same kind of batches from these facts:
    single-group batches of ``pseudo_labels`` (None: plain shuffled ones) of global size ``batch_size``,
    seeded by ``(seed, epoch)``, rank ``rank`` taking its slice of each.
    """

    pseudo_labels: np.ndarray | None
    batch_size: int
    seed: int
    rank: int
    world_size: int


class Loader(Protocol):
    """Batches of one epoch (dicts with ``"index"``); :meth:`set_epoch` before each epoch."""

    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...


class TensorLoader:
    """In-memory batches: ``tensors`` (each with one row per sample, already on ``device``) gathered per batch."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], batch_sampler: BatchSampler,
                 device: torch.device | str) -> None:
        self.tensors = dict(tensors)
        self.batch_sampler = batch_sampler
        self.device = torch.device(device)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the batch sampler for ``epoch``."""
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.batch_sampler:
            index = torch.as_tensor(indices, device=self.device)
            batch = {"index": index}
            batch.update({name: values[index] for name, values in self.tensors.items()})
            yield batch


class _Batches(torch.utils.data.Sampler):
    """The batch sampler seen as a sampler of index arrays (one item = one whole batch)."""

    def __init__(self, batch_sampler: BatchSampler) -> None:
        self.batch_sampler = batch_sampler

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batch_sampler)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def _seed_worker(worker_id: int) -> None:
    """numpy and Python RNGs of a worker follow torch's per-worker seed (itself base seed + worker id)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DatasetLoader:
    """A :class:`~torch.utils.data.DataLoader` over a batched data set, driven by an MCL batch sampler.

    ``dataset[indices]`` (an int64 array) returns a dict of stacked tensors for those samples; it runs
    in ``workers`` processes (0: in this one). The loader's own generator is seeded with ``seed``,
    so worker seeds are reproducible and the global torch RNG (augmentations) is never drawn from.
    The sampler's iteration runs in the main process, so :meth:`set_epoch` takes effect at once.
    """

    def __init__(self, dataset: Any, batch_sampler: BatchSampler, device: torch.device | str, workers: int = 0,
                 seed: int = 0, prefetch: int = 2) -> None:
        self.batch_sampler = batch_sampler
        self.device = torch.device(device)
        self.loader = batch_dataloader(dataset, self.device, workers, seed, prefetch, _Batches(batch_sampler))

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the batch sampler for ``epoch``."""
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        return to_device(self.loader, self.device)


def batch_dataloader(dataset: Any, device: torch.device, workers: int, seed: int, prefetch: int = 2,
                     sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader whose items are whole batches (``batch_size=None``), with reproducible worker seeds.

    Its own generator (seeded with ``seed``) draws the worker seeds, so the global torch RNG (which
    the augmentations use) is never touched; pinned memory on CUDA.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    options: dict[str, Any] = {"num_workers": workers, "worker_init_fn": _seed_worker, "generator": generator,
                               "pin_memory": device.type == "cuda"}
    if workers > 0:
        options.update(prefetch_factor=prefetch, persistent_workers=False)
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, **options)


def to_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """Every tensor of every batch moved to ``device`` (asynchronously from pinned memory).

    A user-facing error raised in a worker process reaches the caller with its own one-line message:
    torch re-raises it with the worker's traceback as the message, which is cut off again here.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except MCLError as exc:
            raise worker_error(exc) from None
        yield {name: value.to(device, non_blocking=True) for name, value in batch.items()}


def worker_error(exc: MCLError) -> MCLError:
    """``exc`` as raised in the worker: the last line of the traceback torch put into its message."""
    text = str(exc)
    if not text.startswith("Caught ") or "Traceback" not in text:
        return exc
    last = text.strip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last.removeprefix(prefix))
