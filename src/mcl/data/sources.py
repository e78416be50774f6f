"""Opening a data source whatever its layout: an image table (``labels.csv``), an ImageFolder, or WebDataset shards.

WebDataset: a ``.tar`` file, a brace pattern ``DIR/shard-{000000..000099}.tar``, or a directory of
``.tar`` files without ``labels.csv`` (:mod:`mcl.data.webdataset`): the shards are indexed once per
process (headers and ``.txt``/``.json`` members only), sample ids are shard order then member order,
and images are read at their offsets when needed (:class:`~mcl.data.images.ShardImages`).

:func:`open_source` reads ``DIR/labels.csv`` when it exists (:func:`~mcl.data.table.load_table`),
else the ``DIR/<class>/<image>`` layout (:func:`~mcl.data.folder.load_folder`); both give the same
:class:`~mcl.data.table.ImageTable`, decoded and cached the same way. Anything else is a one-line
:class:`~mcl.errors.DataError` that says which layouts were expected. :func:`source_digest`
identifies a source's listing (the ``labels.csv`` checksum, or the folder's sorted paths and classes),
e.g. to refuse resuming a run on changed data.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mcl.data.folder import load_folder, read_folder
from mcl.data.shard_files import MAX_TEXT_BYTES, resolve_shards, shards_fingerprint
from mcl.data.table import LABELS_FILE, ImageTable, check_load_options
from mcl.data.table import load_table as load_labels_table
from mcl.errors import DataError

logger = logging.getLogger("mcl")
_SCREEN_CHUNK = 1024  # samples read and checked at a time (bounded memory)

_EXPECTED = ("expected a directory with labels.csv (an image table), DIR/<class>/<image> folders (an image "
             "folder), or WebDataset .tar shards (a directory of them, one file, or DIR/shard-{000000..000009}.tar)")
_INDEXES: dict[tuple[str, str], Any] = {}  # (source, fingerprint) -> ShardIndex, so a process indexes once


def source_kind(path: str | os.PathLike) -> str:
    """``'table'`` (labels.csv), ``'webdataset'`` (tar shards) or ``'folder'``; nothing there is a DataError."""
    text = str(path)
    root = Path(path)
    if "{" in text or (root.is_file() and root.suffix == ".tar"):
        return "webdataset"
    if not root.is_dir():
        what = "not a directory" if root.exists() else "not found"
        raise DataError(f"{root}: {what}; {_EXPECTED}")
    if (root / LABELS_FILE).exists():
        return "table"
    return "webdataset" if any(root.glob("*.tar")) else "folder"


def shard_index(path: str | os.PathLike, max_text_bytes: int = MAX_TEXT_BYTES) -> Any:
    """The :class:`~mcl.data.webdataset.ShardIndex` of a WebDataset source (indexed once per process)."""
    from mcl.data.webdataset import index_shards

    key = (str(path), shards_fingerprint(resolve_shards(path)))
    if key not in _INDEXES:
        _INDEXES[key] = index_shards(path, max_text_bytes)
    return _INDEXES[key]


def _open_shards(path: str | os.PathLike, image_size: int, stream: bool, on_bad_image: str = "error",
                 max_text_bytes: int = MAX_TEXT_BYTES) -> ImageTable:
    from mcl.data.images import ShardImages

    check_load_options(image_size, on_bad_image)
    index = shard_index(path, max_text_bytes)
    if len(index) == 0:
        raise DataError(f"{path}: no samples with an image in the shards")
    attributes, values = index.attribute_codes()
    images = ShardImages(index, image_size)
    root = Path(path) if Path(path).is_dir() else Path(index.shards[0]).parent
    keep, decoded = None, None
    if on_bad_image == "skip":
        keep, decoded = _screen_shards(index, image_size, decode=not stream)
    elif not stream:
        decoded = np.asarray(images)
    table = ImageTable(images=images if stream else decoded, split=np.asarray(index.split, dtype=str),
                       attributes=attributes, attribute_values=values, paths=index.keys,
                       captions=index.captions, root=root)
    return table if keep is None else table.take(np.flatnonzero(keep))


def _screen_shards(index: Any, image_size: int, decode: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``data.on_bad_image: skip`` for shards: which samples are readable, and (``decode``) their pixels.

    Streamed (``decode=False``), like a streamed table, only each image's header is checked now (one
    sequential read of the shards); decoded, every image is decoded once, here. The skipped samples are
    counted and logged (one WARNING with the first few); all of them unreadable is a DataError.
    """
    from PIL import Image

    from mcl.data.webdataset import DecodeStats, ShardReader, decode_samples

    ids = index.ids()
    keep = np.ones(len(ids), dtype=bool)
    images = np.empty((len(ids), image_size, image_size, 3), dtype=np.uint8) if decode else None
    reader, stats = ShardReader(index), DecodeStats()
    try:
        for start in range(0, len(ids), _SCREEN_CHUNK):
            chunk = ids[start:start + _SCREEN_CHUNK]
            blobs = [data for _, data in reader.read_many(chunk.tolist())]
            if decode:
                keep[chunk], images[chunk] = decode_samples(index, chunk, blobs, image_size, "skip", stats)
                continue
            for sample, data in zip(chunk.tolist(), blobs, strict=True):
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        width, height = image.size
                    if Image.MAX_IMAGE_PIXELS is not None and width * height > 2 * Image.MAX_IMAGE_PIXELS:
                        raise ValueError(f"{width}x{height} pixels exceeds the decompression-bomb limit")
                except Exception:  # Pillow raises many unrelated types for corrupt images
                    keep[sample] = False
                    stats.skipped.append(index.where(sample))
    finally:
        reader.close()
    if not keep.any():
        raise DataError(f"{index.shards[0].parent}: none of the {len(ids)} images in the shards can be read "
                        f"(first: {stats.skipped[0]})")
    if stats.skipped:
        examples = ", ".join(repr(w) for w in stats.skipped[:5])
        logger.warning("%s: skipped %d unreadable image(s) (data.on_bad_image: skip; first: %s)",
                       index.shards[0].parent, len(stats.skipped), examples)
    return keep, images


def open_source(
    path: str | os.PathLike,
    image_size: int,
    on_bad_image: str = "error",
    cache: bool = True,
    allow_outside_paths: bool = False,
    progress: bool = True,
    stream: bool = False,
    max_text_bytes: int = MAX_TEXT_BYTES,
) -> ImageTable:
    """Load ``path`` as an image table or an image folder (see the module docstring).

    ``stream``: decode nothing now; ``images`` decodes rows when read (:class:`mcl.data.images.DiskImages`).
    """
    kind = source_kind(path)
    if kind == "webdataset":
        return _open_shards(path, image_size, stream, on_bad_image, max_text_bytes)
    load = load_labels_table if kind == "table" else load_folder
    return load(path, image_size, on_bad_image, cache, progress, allow_outside_paths=allow_outside_paths,
                stream=stream)


def load_table(
    directory: str | os.PathLike,
    image_size: int,
    on_bad_image: str = "error",
    cache: bool = True,
    progress: bool = True,
    *,
    allow_outside_paths: bool = False,
    stream: bool = False,
) -> ImageTable:
    """Any source ``mcl train --data`` reads (an image table, an image folder, WebDataset shards) as an
    :class:`ImageTable` of uint8 RGB ``image_size x image_size`` images (``mcl.load_table``).

    Example:
        >>> table = load_table("photos/", image_size=32)   # photos/<class>/<image>
        >>> table.images.shape, table.attributes["class"].shape
        ((N, 32, 32, 3), (N,))
    """
    return open_source(directory, image_size, on_bad_image, cache, allow_outside_paths=allow_outside_paths,
                       progress=progress, stream=stream)


def source_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of ``labels.csv``'s bytes, or of an image folder's sorted listing."""
    root = Path(path)
    kind = source_kind(root)
    if kind == "webdataset":
        return hashlib.sha256(shard_index(path).fingerprint.encode()).hexdigest()
    if kind == "table":
        try:
            return hashlib.sha256((root / LABELS_FILE).read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"{root / LABELS_FILE}: cannot be read ({exc.strerror})") from None
    return read_folder(root, allow_outside_paths=True).digest


def count_rows(path: str | os.PathLike) -> int:
    """How many images ``path`` lists (labels.csv rows or folder images), without opening any."""
    root = Path(path)
    kind = source_kind(root)
    if kind == "webdataset":
        return len(shard_index(path))
    if kind == "table":
        from mcl.data.table.labels import read_labels

        return len(read_labels(root).paths)
    return len(read_folder(root, allow_outside_paths=True).paths)
