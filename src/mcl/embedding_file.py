"""A stage's embeddings of the training set as an on-disk ``(N, D)`` ``.npy`` memory map, filled shard by shard.

After each stage the whole training set is embedded (:meth:`mcl.tasks.StageTask.embed`) and
clustered. Instead of an ``(N, D)`` tensor gathered on every rank, :class:`EmbeddingFile` writes the
rows to disk as they are computed, and k-means reads them back through a memory map
(:func:`open_embeddings`; :func:`mcl.clustering.kmeans` converts one chunk at a time):

1. once the first chunk gives the width ``D``, rank 0 creates the temporary ``.<name>.tmp`` next to
   the target with :func:`numpy.lib.format.open_memmap` (the header, then ``N x D`` zeros: a sparse
   file); barrier;
2. every rank writes its contiguous shard of rows (the embedding pass's split), chunk by chunk at
   the rows' byte offsets, and fsyncs; barrier;
3. rank 0 renames the file to its final name, so that name only ever holds a complete map (an
   interrupted pass leaves the temporary, which a resumed run removes); barrier.

Memory: one chunk per rank. Rows go through ``os.pwrite``, not through a mapping, because pages
written through a mapping count in the process's RSS until the kernel writes them back.

``dtype`` (``mcl.embedding_dtype``): ``float32``, ``float16`` or ``auto`` (:func:`choose_dtype`:
float32 while the float32 map is at most 1 GiB, so small runs keep their exact values; above it
float16, which halves disk and I/O at a relative rounding error of at most 2^-11 per value).

Example:
    >>> out = EmbeddingFile(Path("stage-1/embeddings.npy"), num_rows=N, dtype="auto")
    >>> out.write_shard(shard, chunks)             # collective: each rank its rows, as (B, D) tensors
    >>> embeddings = open_embeddings(out.path, N)  # (N, D) float32 or float16 memory map
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from mcl import distributed
from mcl.errors import RunDirError
from mcl.io import _fsync_dir, crash_point, disk_full_error

logger = logging.getLogger("mcl")

FLOAT32_MAX_BYTES = 1 << 30  # ``auto`` keeps float32 up to a 1 GiB map (every run of the demo's size)
DTYPES = ("auto", "float16", "float32")


def choose_dtype(dtype: str, num_rows: int, width: int) -> np.dtype:
    """The stored dtype for ``mcl.embedding_dtype``: ``auto`` is float32 up to a 1 GiB float32 map, else float16."""
    if dtype not in DTYPES:
        raise ValueError(f"embedding dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return np.dtype(dtype)
    size = num_rows * width * 4
    return np.dtype(np.float32 if size <= FLOAT32_MAX_BYTES else np.float16)


def temporary_path(path: Path) -> Path:
    """Where the map is written before its rename (``.<name>.tmp``: what a resumed run clears away)."""
    return path.with_name(f".{path.name}.tmp")


class EmbeddingFile:
    """Writer of an ``(num_rows, D)`` ``.npy`` map at ``path``; ``D`` comes from the first chunk."""

    def __init__(self, path: str | os.PathLike, num_rows: int, dtype: str = "auto") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"embedding dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.path = Path(path)
        self.num_rows = num_rows
        self.dtype = dtype

    def write_shard(self, shard: np.ndarray, chunks: Iterable[torch.Tensor]) -> None:
        """Write this rank's rows ``shard`` (contiguous, ascending) from ``chunks`` ((B, D) tensors, in order).

        A collective: every rank calls it with its own shard (possibly empty, but not on rank 0).
        Returns once the complete file is at :attr:`path` on every rank.
        """
        tmp = temporary_path(self.path)
        chunks = iter(chunks)
        first = next(chunks, None)
        # Rank 0 always holds rows (the first shard is the largest), so it names the width.
        width = distributed.broadcast_object(None if first is None else int(first.shape[1]))
        if width is None:
            raise ValueError(f"{self.path}: rank 0 embedded no rows")
        try:
            if distributed.is_main_process():
                dtype = choose_dtype(self.dtype, self.num_rows, width)
                logger.info("embeddings: %s (%d x %d %s, %.2f GB%s)", self.path, self.num_rows, width, dtype.name,
                            self.num_rows * width * dtype.itemsize / 1e9,
                            f"; mcl.embedding_dtype: {self.dtype}" if self.dtype == "auto" else "")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                created = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(self.num_rows, width))
                del created  # header written, file sized: the rows go in with pwrite
            distributed.barrier()
            written = self._write_rows(tmp, int(shard[0]) if len(shard) else 0, width,
                                       _prepend(first, chunks) if first is not None else iter(()))
            if written != len(shard):
                raise ValueError(f"{self.path}: {written} rows embedded for a shard of {len(shard)}")
            distributed.barrier()
            if distributed.is_main_process():
                crash_point("write")
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
        except BaseException as exc:
            if distributed.is_main_process():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if isinstance(exc, OSError) and (full := disk_full_error(self.path, exc)) is not None:
                raise full from exc
            raise
        distributed.barrier()

    def _write_rows(self, tmp: Path, row: int, width: int, chunks: Iterator[torch.Tensor]) -> int:
        """Write ``chunks`` from ``row`` on at their byte offsets in ``tmp``; returns the rows written."""
        header = np.load(tmp, mmap_mode="r", allow_pickle=False)  # reads the header only: offset and dtype
        offset, dtype = header.offset, header.dtype
        if header.shape != (self.num_rows, width):
            raise ValueError(f"{tmp}: shape {header.shape}, expected {(self.num_rows, width)}")
        del header
        start = row
        fd = os.open(tmp, os.O_WRONLY)
        try:
            for chunk in chunks:
                rows = chunk.detach().to(device="cpu", dtype=torch.float32).numpy().astype(dtype, copy=False)
                if rows.ndim != 2 or rows.shape[1] != width:
                    raise ValueError(f"{self.path}: chunk of shape {tuple(rows.shape)}, expected (B, {width})")
                if row + len(rows) > self.num_rows:
                    raise ValueError(f"{self.path}: more than {self.num_rows} rows embedded")
                data = memoryview(np.ascontiguousarray(rows)).cast("B")
                position = offset + row * width * dtype.itemsize
                while data:  # pwrite may write less than asked (signals, some file systems)
                    count = os.pwrite(fd, data, position)
                    data, position = data[count:], position + count
                row += len(rows)
            os.fsync(fd)
        finally:
            os.close(fd)
        return row - start


def _prepend(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


def open_embeddings(path: str | os.PathLike, num_rows: int) -> np.memmap:
    """The ``(num_rows, D)`` float32/float16 map at ``path``, memory-mapped (nothing is read up front).

    Copy-on-write mode: ``torch.from_numpy`` warns on read-only arrays, and nothing is ever written back.
    """
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    except ValueError as exc:
        raise RunDirError(f"{path}: not a valid .npy embedding map ({exc})") from None
    if array.ndim != 2 or array.shape[0] != num_rows or array.dtype not in (np.float16, np.float32):
        raise RunDirError(f"{path}: {array.shape} {array.dtype} embeddings, expected ({num_rows}, D) float16 or "
                          "float32")
    return array
