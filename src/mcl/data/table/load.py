"""Loading a source's rows into an :class:`~mcl.data.table.core.ImageTable`.

Steps: check that every path stays inside the directory (unless ``allow_outside_paths``), decode or
read the cached images, report unreadable images (``on_bad_image``: ``error`` raises on the first,
``skip`` drops them and logs how many), log the original-size range when images were resized, then
turn each attribute's strings into int64 codes over its sorted distinct values (of the kept rows).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mcl.data.table.cache import load_images
from mcl.data.table.core import LABELS_FILE, ImageTable, Rows, check_inside, check_load_options, take_strings
from mcl.data.table.decode import BadImage
from mcl.data.table.labels import read_labels
from mcl.data.table.strings import StringColumn
from mcl.errors import ConfigError, DataError

logger = logging.getLogger("mcl")


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
    """Load an image table, decoding every image to uint8 RGB ``image_size x image_size``.

    ``stream=True`` decodes nothing now: ``images`` is a :class:`~mcl.data.images.DiskImages` that
    decodes rows when they are read; only image headers are checked here (missing, unreadable or
    oversized files are reported as below), a file corrupt past its header fails when it is decoded.

    ``on_bad_image='error'`` raises :class:`DataError` on the first missing/corrupt image;
    ``'skip'`` drops those rows and logs how many. The decoded images are cached under
    ``directory/.mcl_cache`` (skipped silently where the directory is not writable). A path that
    resolves outside ``directory`` (``..``, absolute, or through a symlink) is a :class:`DataError`
    unless ``allow_outside_paths``.
    """
    check_load_options(image_size, on_bad_image)
    root = Path(directory)
    if not (root / LABELS_FILE).exists():  # an image folder or WebDataset shards: read like training reads them
        from mcl.data.sources import open_source

        return open_source(directory, image_size, on_bad_image=on_bad_image, cache=cache, progress=progress,
                           allow_outside_paths=allow_outside_paths, stream=stream)
    return load_rows(root, read_labels(root), image_size, on_bad_image, cache, progress, allow_outside_paths,
                     stream=stream)


def load_rows(
    root: Path,
    rows: Rows,
    image_size: int,
    on_bad_image: str,
    cache: bool,
    progress: bool,
    allow_outside_paths: bool,
    stream: bool = False,
) -> ImageTable:
    """Decode ``rows`` (paths relative to ``root``) into an :class:`ImageTable`; what every source shares.

    ``stream``: check headers only and leave decoding to the reader (:class:`~mcl.data.images.DiskImages`).
    """
    check_load_options(image_size, on_bad_image)
    if not isinstance(allow_outside_paths, bool):
        raise ConfigError(f"allow_outside_paths: got {allow_outside_paths!r}; expected true or false")
    if not allow_outside_paths:
        check_inside(root, rows)
    if stream:
        from mcl.data.images import DiskImages

        bad = check_headers(root, rows, fail_fast=on_bad_image == "error")
        if bad:
            _report_bad(rows, bad, on_bad_image)
        keep = _kept_rows(len(rows.paths), bad)
        paths = take_strings(StringColumn.from_strings(rows.paths), keep)
        return _build_table(root, rows, DiskImages(root, paths, image_size), keep, paths)
    images, bad, sizes = load_images(root, rows, image_size, cache, progress, fail_fast=on_bad_image == "error")
    if bad:
        _report_bad(rows, bad, on_bad_image)
    if sizes is not None:
        sizes.log(rows.origin, image_size)
    return _build_table(root, rows, images, _kept_rows(len(rows.paths), bad))


def check_headers(root: Path, rows: Rows, fail_fast: bool) -> list[BadImage]:
    """Rows whose image is missing, not an image, or larger than Pillow's decompression-bomb limit.

    Reads headers only (a few hundred bytes a file), so a streamed set is checked without decoding it.
    """
    from PIL import Image

    from mcl.data.table.decode import failure_reason

    limit = Image.MAX_IMAGE_PIXELS
    bad = []
    for row, path in enumerate(rows.paths):
        try:
            with Image.open(root / path) as image:
                width, height = image.size
            if limit is not None and width * height > 2 * limit:
                raise ValueError(f"{width}x{height} pixels exceeds the decompression-bomb limit")
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            bad.append(BadImage(row, path, failure_reason(exc)))
            if fail_fast:
                break
    return bad


def _report_bad(rows: Rows, bad: list[BadImage], on_bad_image: str) -> None:
    first = bad[0]
    if on_bad_image == "error":
        raise DataError(
            f"{rows.where(first.row)}: image {first.path!r} cannot be read ({first.reason}); "
            "fix it or load with on_bad_image='skip'"
        )
    if len(bad) == len(rows.paths):
        raise DataError(
            f"{rows.origin}: none of the {len(bad)} images can be read (first: {first.path!r}, {first.reason})"
        )
    examples = ", ".join(repr(entry.path) for entry in bad[:5])
    logger.warning("%s: skipped %d unreadable image(s): %s", rows.origin, len(bad), examples)


def _kept_rows(n: int, bad: list[BadImage]) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[[entry.row for entry in bad]] = False
    return np.flatnonzero(keep)


def _build_table(root: Path, rows: Rows, images: np.ndarray, keep: np.ndarray,
                 paths: Sequence[str] | None = None) -> ImageTable:
    # Column by column over int64 row indices: no Python object per row survives (paths and captions
    # stay byte columns; split and attributes become numpy arrays straight from their few distinct values).
    attributes: dict[str, np.ndarray] = {}
    attribute_values: dict[str, list[str]] = {}
    for name, column in rows.attributes.items():
        codes, values = _codes(column, keep)
        attributes[name], attribute_values[name] = codes, values
    split_codes, split_values = _codes(rows.split, keep)
    return ImageTable(
        images=images,
        split=np.array(split_values, dtype=str)[split_codes] if len(split_values) else np.array([], dtype=str),
        attributes=attributes,
        attribute_values=attribute_values,
        paths=take_strings(StringColumn.from_strings(rows.paths), keep) if paths is None else paths,
        captions=None if rows.captions is None else take_strings(StringColumn.from_strings(rows.captions), keep),
        root=root,
    )


def _codes(column: Sequence[str], keep: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """int64 codes of ``column[keep]`` over its sorted distinct values (what ``np.unique`` of the strings gives)."""
    ids: dict[str, int] = {}
    first = np.fromiter((ids.setdefault(value, len(ids)) for value in column), dtype=np.int64, count=len(column))
    first = first[keep]
    present = np.unique(first)  # values of dropped rows only are not values of the table
    by_id = list(ids)
    values = sorted(by_id[i] for i in present.tolist())
    order = {value: code for code, value in enumerate(values)}
    remap = np.full(len(by_id), -1, dtype=np.int64)
    remap[present] = [order[by_id[i]] for i in present.tolist()]
    return remap[first], values
