"""A stage's embeddings of the training set as an on-disk ``(N, D)`` ``.npy``, filled shard by shard.

After each stage the whole training set is embedded (:meth:`mcl.tasks.StageTask.embed`) and
clustered. Instead of an ``(N, D)`` tensor gathered on every rank, :class:`EmbeddingFile` writes the
rows to disk as they are computed, and k-means reads them back by row ranges and row samples
(:func:`open_embeddings` gives an :class:`EmbeddingRows`; :func:`mcl.clustering.kmeans` converts one
chunk at a time):

1. once the first chunk gives the width ``D``, rank 0 creates the temporary ``.<name>.tmp`` next to
   the target with :func:`numpy.lib.format.open_memmap` (the header, then ``N x D`` zeros: a sparse
   file); barrier;
2. every rank writes its contiguous shard of rows (the embedding pass's split), chunk by chunk at
   the rows' byte offsets, and fsyncs; barrier;
3. rank 0 renames the file to its final name, so that name only ever holds a complete map (an
   interrupted pass leaves the temporary, which a resumed run removes); barrier.

Memory: one chunk per rank. Rows go through ``os.pwrite`` and come back through ``os.pread``, not
through a mapping, because file pages touched through a mapping count in the process's RSS (written
ones until the kernel writes them back, read ones for as long as the map lives): a k-means pass over a
map of ``N x D`` would add all of it to the RSS.

``dtype`` (``mcl.embedding_dtype``): ``float32``, ``float16`` or ``auto`` (:func:`choose_dtype`:
float32 while the float32 map is at most 1 GiB, so small runs keep their exact values; above it
float16, which halves disk and I/O at a relative rounding error of at most 2^-11 per value).

Example:
    >>> out = EmbeddingFile(Path("stage-1/embeddings.npy"), num_rows=N, dtype="auto")
    >>> out.write_shard(shard, chunks)             # collective: each rank its rows, as (B, D) tensors
    >>> embeddings = open_embeddings(out.path, N)  # (N, D) float32 or float16 rows, read on indexing
    >>> embeddings[0:1024], embeddings[np.array([3, 17])]    # ndarrays read from the file
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcl import distributed, faults
from mcl.errors import RunDirError
from mcl.files import _fsync_dir, disk_full_error

logger = logging.getLogger("mcl")

READ_BLOCK_BYTES = 8 << 20  # span of rows one gather reads at once
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
                faults.reached("write")
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


def open_embeddings(path: str | os.PathLike, num_rows: int) -> EmbeddingRows:
    """The ``(num_rows, D)`` float32/float16 embeddings at ``path`` as an :class:`EmbeddingRows` (header read only)."""
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header: shape, dtype and data offset
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    except ValueError as exc:
        raise RunDirError(f"{path}: not a valid .npy embedding map ({exc})") from None
    if array.ndim != 2 or array.shape[0] != num_rows or array.dtype not in (np.float16, np.float32):
        raise RunDirError(f"{path}: {array.shape} {array.dtype} embeddings, expected ({num_rows}, D) float16 or "
                          "float32")
    if not array.dtype.isnative or not array.flags.c_contiguous:
        raise RunDirError(f"{path}: {array.dtype.str} embeddings, Fortran order {np.isfortran(array)}; expected "
                          "native byte order and C order (what EmbeddingFile writes)")
    rows = EmbeddingRows(path, int(array.offset), array.dtype, (int(array.shape[0]), int(array.shape[1])))
    del array
    return rows


class EmbeddingRows:
    """Read-only ``(N, D)`` rows of an embeddings ``.npy``, read with ``os.pread`` at their byte offsets.

    Indexing like the array it stands for: ``rows[a:b]``, ``rows[i]`` and ``rows[indices]`` (any int
    array; sorted is fastest) return fresh, writable ndarrays; ``np.asarray(rows)`` reads all of it.
    Why not a memory map: the file pages a map has touched count in the process's RSS for as long as
    it is mapped (a k-means pass touches all ``N x D``), while ``pread`` copies them out of the page
    cache, which the kernel reclaims as it needs. Memory: what is returned plus one block of
    :data:`READ_BLOCK_BYTES` for gathers.
    """

    ndim = 2

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, int]) -> None:
        self.path, self.offset, self.dtype, self.shape = Path(path), offset, np.dtype(dtype), shape
        self._row_bytes = shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of all rows."""
        return self.shape[0] * self._row_bytes

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(0, self.shape[0])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows[r, c]: rows first, then the rest on the (small) result
            first = self[key[0]]
            return first[key[1:]] if first.ndim == 1 else first[(slice(None), *key[1:])]
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            row = int(key) + n if key < 0 else int(key)
            if not 0 <= row < n:
                raise IndexError(f"row {int(key)} out of range for {n} embeddings")
            return self._read(row, row + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read(start, max(start, stop))
            key = np.arange(start, stop, step)
        return self._gather(np.asarray(key))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"embedding rows must be integers, got {rows.dtype}")
        rows = rows.astype(np.int64).reshape(-1)
        n = self.shape[0]
        rows = np.where(rows < 0, rows + n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"embedding rows out of range for {n} embeddings")
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        span = max(1, READ_BLOCK_BYTES // max(1, self._row_bytes))
        with open(self.path, "rb", buffering=0) as handle:
            i = 0
            while i < len(ordered):
                first = int(ordered[i])
                j = int(np.searchsorted(ordered, first + span, side="left"))
                block = self._read(first, int(ordered[j - 1]) + 1, handle.fileno())
                out[order[i:j]] = block[ordered[i:j] - first]
                i = j
        return out

    def _read(self, start: int, stop: int, fd: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` as a new ``(stop - start, D)`` array."""
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        if fd is None:
            with open(self.path, "rb", buffering=0) as handle:
                return self._read(start, stop, handle.fileno())
        view = memoryview(out.reshape(-1).view(np.uint8))
        position = self.offset + start * self._row_bytes
        while view:  # pread may return less than asked
            count = os.preadv(fd, [view], position)
            if count == 0:
                raise RunDirError(f"{self.path}: truncated ({position} bytes, rows up to {stop} expected)")
            view, position = view[count:], position + count
        return out

    def __repr__(self) -> str:
        return f"EmbeddingRows({str(self.path)!r}, shape={self.shape}, dtype={self.dtype.name})"
