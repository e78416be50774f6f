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
import os
from pathlib import Path
from typing import Any

import numpy as np

from mcl.data.folder import load_folder, read_folder
from mcl.data.table import LABELS_FILE, ImageTable, load_table
from mcl.errors import DataError

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


def shard_index(path: str | os.PathLike) -> Any:
    """The :class:`~mcl.data.webdataset.ShardIndex` of a WebDataset source (indexed once per process)."""
    from mcl.data.webdataset import index_shards, resolve_shards, shards_fingerprint

    key = (str(path), shards_fingerprint(resolve_shards(path)))
    if key not in _INDEXES:
        _INDEXES[key] = index_shards(path)
    return _INDEXES[key]


def _open_shards(path: str | os.PathLike, image_size: int, stream: bool) -> ImageTable:
    from mcl.data.images import ShardImages

    index = shard_index(path)
    if len(index) == 0:
        raise DataError(f"{path}: no samples with an image in the shards")
    attributes, values = index.attribute_codes()
    images = ShardImages(index, image_size)
    root = Path(path) if Path(path).is_dir() else Path(index.shards[0]).parent
    return ImageTable(images=images if stream else np.asarray(images), split=np.asarray(index.split, dtype=str),
                      attributes=attributes, attribute_values=values, paths=index.keys,
                      captions=index.captions, root=root)


def open_source(
    path: str | os.PathLike,
    image_size: int,
    on_bad_image: str = "error",
    cache: bool = True,
    allow_outside_paths: bool = False,
    progress: bool = True,
    stream: bool = False,
) -> ImageTable:
    """Load ``path`` as an image table or an image folder (see the module docstring).

    ``stream``: decode nothing now; ``images`` decodes rows when read (:class:`mcl.data.images.DiskImages`).
    """
    kind = source_kind(path)
    if kind == "webdataset":
        return _open_shards(path, image_size, stream)
    load = load_table if kind == "table" else load_folder
    return load(path, image_size, on_bad_image, cache, progress, allow_outside_paths=allow_outside_paths,
                stream=stream)


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
