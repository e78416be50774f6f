"""Loading a source's rows into an :class:`~mcl.data.table.core.ImageTable`.

Steps: check that every path stays inside the directory (unless ``allow_outside_paths``), decode or
read the cached images, report unreadable images (``on_bad_image``: ``error`` raises on the first,
``skip`` drops them and logs how many), log the original-size range when images were resized, then
turn each attribute's strings into int64 codes over its sorted distinct values (of the kept rows).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mcl.data.table.cache import load_images
from mcl.data.table.core import ImageTable, Rows, check_inside, check_load_options
from mcl.data.table.decode import BadImage
from mcl.data.table.labels import read_labels
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
        dropped = {entry.row for entry in bad}
        kept = [path for row, path in enumerate(rows.paths) if row not in dropped]
        return _build_table(root, rows, DiskImages(root, kept, image_size), dropped)
    images, bad, sizes = load_images(root, rows, image_size, cache, progress, fail_fast=on_bad_image == "error")
    if bad:
        _report_bad(rows, bad, on_bad_image)
    if sizes is not None:
        sizes.log(rows.origin, image_size)
    return _build_table(root, rows, images, {entry.row for entry in bad})


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


def _build_table(root: Path, rows: Rows, images: np.ndarray, dropped: set[int]) -> ImageTable:
    keep = [row for row in range(len(rows.paths)) if row not in dropped]
    attributes: dict[str, np.ndarray] = {}
    attribute_values: dict[str, list[str]] = {}
    for name, column in rows.attributes.items():
        values, codes = np.unique(np.array([column[row] for row in keep], dtype=str), return_inverse=True)
        attributes[name] = codes.reshape(-1).astype(np.int64)
        attribute_values[name] = [str(value) for value in values]
    return ImageTable(
        images=images,
        split=np.array([rows.split[row] for row in keep], dtype=str),
        attributes=attributes,
        attribute_values=attribute_values,
        paths=[rows.paths[row] for row in keep],
        captions=None if rows.captions is None else [rows.captions[row] for row in keep],
        root=root,
    )
