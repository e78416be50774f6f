"""The in-memory image table, the parsed rows every source yields, and the path-containment check.

A *source* (``labels.csv`` or an image folder) is first read into :class:`Rows`: one relative image
path per sample plus its split, caption and attribute strings. :func:`~mcl.data.table.load.load_rows`
then decodes the images and builds an :class:`ImageTable` (images ``(N, H, W, 3)`` uint8, attribute
strings turned into int64 codes indexing ``attribute_values``).

Containment: every row's path must resolve (symlinks followed, ``..`` collapsed) inside the source's
directory, e.g. ``../../etc/hostname`` or an absolute ``/data/x.png`` is refused unless the caller
passes ``allow_outside_paths=True``. Each distinct parent folder is resolved once, so a big table
costs one ``lstat`` per image on top of that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcl.data.table.strings import StringColumn
from mcl.errors import ConfigError, DataError

LABELS_FILE = "labels.csv"
CACHE_DIR = ".mcl_cache"
SPLITS = ("train", "test")
RESERVED_COLUMNS = ("path", "split", "caption")
ON_BAD_IMAGE = ("error", "skip")


@dataclass
class ImageTable:
    """Decoded images of an image table with their split, attributes and captions (row-aligned).

    ``paths`` and ``captions`` are sequences of str: a :class:`~mcl.data.table.strings.StringColumn`
    when loaded from a table or folder (bytes, no object per row), else whatever the maker passed.
    """

    images: np.ndarray
    split: np.ndarray
    attributes: dict[str, np.ndarray]
    attribute_values: dict[str, list[str]]
    paths: Sequence[str]
    captions: Sequence[str] | None
    root: Path

    def __post_init__(self) -> None:
        n = len(self.paths)
        lengths = [len(self.images), len(self.split), *(len(c) for c in self.attributes.values())]
        if self.captions is not None:
            lengths.append(len(self.captions))
        if any(length != n for length in lengths):
            raise ValueError(f"ImageTable columns have different lengths: {lengths} vs {n} paths")

    def __len__(self) -> int:
        return len(self.paths)

    def attribute_names(self) -> list[str]:
        """Attribute columns in the order of ``labels.csv``."""
        return list(self.attributes)

    def subset(self, split: str) -> ImageTable:
        """Rows of one split; attribute codes and values stay those of the full table."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.take(np.flatnonzero(self.split == split))

    def take(self, rows: np.ndarray) -> ImageTable:
        """Rows ``rows`` (int indices); a contiguous range keeps ``images`` a memory map."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageTable(
            images=self.images[_as_slice(rows)],
            split=self.split[rows],
            attributes={name: codes[rows] for name, codes in self.attributes.items()},
            attribute_values={name: list(values) for name, values in self.attribute_values.items()},
            paths=take_strings(self.paths, rows),
            captions=None if self.captions is None else take_strings(self.captions, rows),
            root=self.root,
        )


def take_strings(strings: Sequence[str], rows: np.ndarray) -> Sequence[str]:
    """``strings`` at ``rows``: a :class:`StringColumn` stays one (no per-row objects), a list stays a list."""
    if isinstance(strings, StringColumn):
        return strings[rows]
    return [strings[i] for i in rows]


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    # Fancy indexing would copy a memory-mapped table into RAM; a slice is a view.
    if len(rows) == 0:
        return slice(0, 0)
    if rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


@dataclass
class Rows:
    """The samples of one source in order, before decoding.

    ``origin`` is what error messages name (``labels.csv`` or the image folder); ``digest`` identifies
    the listing for the decode cache; ``paths`` and ``captions`` are lists or (``labels.csv``)
    :class:`~mcl.data.table.strings.StringColumn` s; ``lines`` holds the ``labels.csv`` line of each row (None for a
    folder, whose rows are named by their path alone).
    """

    origin: Path
    digest: str
    paths: Sequence[str]
    split: Sequence[str]
    captions: Sequence[str] | None
    attributes: dict[str, Sequence[str]]
    lines: Sequence[int] | None = None

    def where(self, row: int) -> str:
        """The message prefix that locates ``row``: ``labels.csv line 7: column 'path'`` or the folder."""
        if self.lines is None:
            return str(self.origin)
        return f"{self.origin} line {self.lines[row]}: column 'path'"


def check_load_options(image_size: int | None, on_bad_image: str, *, size_optional: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``on_bad_image`` is known and ``image_size`` a positive integer.

    With ``size_optional`` an ``image_size`` of None (keep each image's own size) passes too.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image: got {on_bad_image!r}; expected 'error' or 'skip'")
    if size_optional and image_size is None:
        return
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size: got {image_size!r}; expected a positive integer")


def check_inside(root: Path, rows: Rows) -> None:
    """Raise :class:`DataError` for the first row whose path resolves outside ``root`` (symlinks followed)."""
    # Plain os.path strings: pathlib objects cost several times more per row on big tables.
    base = os.path.realpath(root)
    prefix = os.path.join(base, "")
    parents: dict[str, str] = {}
    for row, path in enumerate(rows.paths):
        target = _resolve(str(root), path, parents)
        if target != base and not target.startswith(prefix):
            raise DataError(
                f"{rows.where(row)}: {path!r} resolves to {target}, outside {base}; keep images inside the "
                "directory or load with allow_outside_paths=True (config key data.allow_outside_paths)"
            )


def _resolve(root: str, path: str, parents: dict[str, str]) -> str:
    # realpath costs an lstat per path component; parents repeat, so each is resolved once.
    head, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(os.path.join(root, path))
    parent = parents.get(head)
    if parent is None:
        parent = parents[head] = os.path.realpath(os.path.join(root, head))
    target = os.path.join(parent, name)
    return os.path.realpath(target) if os.path.islink(target) else target
