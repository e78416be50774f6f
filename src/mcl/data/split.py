"""A held-out test split for data that has none, chosen by a stable hash of each sample's key.

When a source gives no ``test`` rows (an image folder without ``train/``/``test/`` folders, caption
shards without a json ``split``, a ``labels.csv`` of train rows only), :func:`hold_out` marks a
fraction ``data.test_fraction`` of them ``test``: row ``i`` is held out when
``blake2b(key_i) / 2**64 < test_fraction``, where the key is the row's image path (a folder or table
path, or a shard sample's ``__key__``). The decision depends on the key alone, so adding or removing
other files never moves a sample between splits, and train, eval, embed and report, which all load
through :func:`mcl.data.resolve.load_table_for`, see the same split. At least one row is held out (the
one with the smallest hash) and at least one stays for training. ``test_fraction = 0`` trains on
everything (and leaves nothing to evaluate on).

Example:
    >>> import numpy as np
    >>> test = held_out(["cat/1.png", "cat/2.png", "dog/3.png"], 0.5)
    >>> test.dtype, test.shape
    (dtype('bool'), (3,))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mcl.data.table import ImageTable

logger = logging.getLogger("mcl")


def key_fraction(key: str) -> float:
    """The key's position in ``[0, 1)``: its blake2b-64 digest over ``2**64`` (the same on every machine)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


def held_out(keys: Sequence[str], test_fraction: float) -> np.ndarray:
    """Boolean mask ``(N,)`` of the keys held out as the test split (see the module docstring)."""
    positions = np.fromiter((key_fraction(str(key)) for key in keys), dtype=np.float64, count=len(keys))
    test = positions < test_fraction
    if test_fraction > 0 and len(keys) >= 2:
        if not test.any():
            test[int(positions.argmin())] = True
        if test.all():
            test[int(positions.argmax())] = False
    return test


def hold_out(table: ImageTable, test_fraction: float, where: str = "") -> ImageTable:
    """``table`` with a hashed test split when it has no ``test`` rows (else unchanged), logged with its size."""
    if test_fraction <= 0 or (table.split == "test").any() or len(table) == 0:
        return table
    test = held_out(table.paths, test_fraction)
    logger.info("%s: no test split in the data; held out %d of %d samples as the test split (data.test_fraction="
                "%g, by a stable hash of each image path)", where or table.root, int(test.sum()), len(table),
                test_fraction)
    return replace(table, split=np.where(test, "test", "train"))
