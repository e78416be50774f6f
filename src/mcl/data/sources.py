"""Opening a data directory whatever its layout: an image table (``labels.csv``) or an ImageFolder.

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

from mcl.data.folder import load_folder, read_folder
from mcl.data.table import LABELS_FILE, ImageTable, load_table
from mcl.errors import DataError

_EXPECTED = "expected a directory with labels.csv (an image table) or DIR/<class>/<image> folders (an image folder)"


def source_kind(path: str | os.PathLike) -> str:
    """``'table'`` when ``path/labels.csv`` exists, else ``'folder'``; a missing directory is a DataError."""
    root = Path(path)
    if not root.is_dir():
        what = "not a directory" if root.exists() else "not found"
        raise DataError(f"{root}: {what}; {_EXPECTED}")
    return "table" if (root / LABELS_FILE).exists() else "folder"


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
    load = load_table if source_kind(path) == "table" else load_folder
    return load(path, image_size, on_bad_image, cache, progress, allow_outside_paths=allow_outside_paths,
                stream=stream)


def source_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of ``labels.csv``'s bytes, or of an image folder's sorted listing."""
    root = Path(path)
    if source_kind(root) == "table":
        try:
            return hashlib.sha256((root / LABELS_FILE).read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"{root / LABELS_FILE}: cannot be read ({exc.strerror})") from None
    return read_folder(root, allow_outside_paths=True).digest


def count_rows(path: str | os.PathLike) -> int:
    """How many images ``path`` lists (labels.csv rows or folder images), without opening any."""
    root = Path(path)
    if source_kind(root) == "table":
        from mcl.data.table.labels import read_labels

        return len(read_labels(root).paths)
    return len(read_folder(root, allow_outside_paths=True).paths)
