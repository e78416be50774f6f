"""Image tables: the single input format of every downstream step.

An image table is a directory holding ``labels.csv`` with the columns ``path`` (image path relative
to the CSV, and inside its directory unless ``allow_outside_paths``), an optional ``split``
(``train``/``test``; without it every row is ``train``), an optional ``caption`` (free text for
multimodal training) and any number of attribute columns (categorical strings, used only for
evaluation). :mod:`mcl.data.folder` reads the ImageFolder layout into the same :class:`ImageTable`.

Images are decoded once per image size into ``<table>/.mcl_cache/images_<size>.npy`` and memory-mapped
afterwards. A small JSON key next to it (row count, hash of ``labels.csv``, sizes and mtimes of the
images) makes any change to the table invalidate the cache.

Modules: :mod:`~.core` (``ImageTable``, parsed ``Rows``, option and path checks), :mod:`~.labels`
(``labels.csv``), :mod:`~.decode` (image files to arrays), :mod:`~.cache` (the ``.npy`` cache),
:mod:`~.load` (``load_table``), :mod:`~.write` (``write_table`` and the generators' helpers).

Example::

    table = load_table("data/trifeature", image_size=32)
    table.images.shape            # (5000, 32, 32, 3) uint8, memory-mapped
    table.subset("test").attributes["shape"][:3], table.attribute_values["shape"][:2]
"""

from mcl.data.table.core import (
    CACHE_DIR,
    LABELS_FILE,
    ON_BAD_IMAGE,
    RESERVED_COLUMNS,
    SPLITS,
    ImageTable,
    Rows,
    check_load_options,
)
from mcl.data.table.decode import decode_image
from mcl.data.table.load import load_rows, load_table
from mcl.data.table.write import balanced_codes, check_generator_args, split_column, write_table

__all__ = [
    "CACHE_DIR",
    "LABELS_FILE",
    "ON_BAD_IMAGE",
    "RESERVED_COLUMNS",
    "SPLITS",
    "ImageTable",
    "Rows",
    "balanced_codes",
    "check_generator_args",
    "check_load_options",
    "decode_image",
    "load_rows",
    "load_table",
    "split_column",
    "write_table",
]
