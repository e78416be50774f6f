"""Images decoded on access from an image table's files: the ``stream`` residency of a table or folder.

:class:`DiskImages` stands for the uint8 ``(N, size, size, 3)`` array of ``root/paths[i]`` decoded with
:func:`~mcl.data.table.decode.decode_image`; indexing gives lazy views, ``np.asarray(view)`` decodes.
It lives in :mod:`mcl.data.table` (not :mod:`mcl.data.images`, which re-exports it) so that loading a
table never imports the training-side residency code.

Example:
    >>> images = DiskImages("data/", ["images/000000.png"], size=32)
    >>> np.asarray(images[:1]).shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcl.data.table.strings import StringColumn
from mcl.errors import DataError


class DiskImages:
    """Images decoded on access: ``images[rows]`` is a lazy view, ``np.asarray(view)`` decodes it.

    Behaves like the ``(N, size, size, 3)`` uint8 array it stands for (``len``, ``shape``, ``dtype``,
    integer and slice/array indexing), so code written for resident arrays works unchanged when it
    touches a batch at a time.

    ``paths`` is a :class:`~mcl.data.table.strings.StringColumn` (bytes plus offsets, shared by every
    view and every forked worker; a list of ``str`` would cost an object per row, copied into each
    worker as soon as it is touched).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], size: int,
                 rows: np.ndarray | None = None) -> None:
        self.root = Path(root)
        self.paths: Sequence[str] = StringColumn.from_strings(paths)
        self.size = int(size)
        self.rows = np.arange(len(self.paths), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, size, size, 3)``."""
        return (len(self.rows), self.size, self.size, 3)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.decode(int(self.rows[key]))
        if torch.is_tensor(key):
            key = key.cpu().numpy()
        return DiskImages(self.root, self.paths, self.size, self.rows[key])

    def decode(self, row: int) -> np.ndarray:
        """Row ``row`` (of the full listing) as uint8 ``(size, size, 3)``; a bad file is a one-line DataError."""
        from mcl.data.table.decode import decode_image, failure_reason

        path = self.root / self.paths[row]
        try:
            return decode_image(path, self.size)[0]
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            raise DataError(f"{path}: cannot be decoded ({failure_reason(exc)})") from None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.uint8)
        for i, row in enumerate(self.rows):
            out[i] = self.decode(int(row))
        return out if dtype is None else out.astype(dtype)

    @property
    def nbytes(self) -> int:
        """Bytes the decoded images would take."""
        return int(np.prod(self.shape))
