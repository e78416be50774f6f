"""A column of strings held as bytes: one UTF-8 buffer plus per-row ``int64`` start and end offsets.

A Python ``list`` of ``N`` paths or captions costs one ~60-100 byte ``str`` object per row, and a
forked DataLoader worker that merely reads them (reference counts, GC passes) ends up with its own
copy of every page holding them. :class:`StringColumn` holds the same rows as three numpy arrays
(the text bytes, and 16 bytes of offsets a row), which forked workers keep sharing; a row becomes a
``str`` only when it is read.

It is a read-only ``Sequence[str]``: ``len``, ``column[i]`` (a ``str``), ``column[rows]`` and
``column[a:b]`` (a new column over the same buffer, no copy), iteration, ``in``, ``index``, ``==``
with any sequence of strings, and ``np.asarray(column, dtype=str)``.

Example:
    >>> paths = StringColumn.from_strings(["a.png", "b/c.png"])
    >>> paths[1], list(paths[np.array([1, 0])]), paths == ["a.png", "b/c.png"]
    ('b/c.png', ['b/c.png', 'a.png'], True)
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np


class StringColumn(Sequence[str]):
    """Rows of text over one UTF-8 buffer (see the module docstring)."""

    __slots__ = ("data", "ends", "starts")

    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.data = np.asarray(data, dtype=np.uint8)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        """The column of ``strings`` (a column is returned as it is)."""
        if isinstance(strings, StringColumn):
            return strings
        builder = StringBuilder()
        for text in strings:
            builder.append(text)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, key: int) -> str: ...

    @overload
    def __getitem__(self, key: slice | np.ndarray | Sequence[int]) -> StringColumn: ...

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.data[self.starts[key]:self.ends[key]].tobytes().decode("utf-8")
        return StringColumn(self.data, self.starts[key], self.ends[key])

    def __iter__(self) -> Iterator[str]:
        data = memoryview(self.data)
        for start, end in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            yield str(data[start:end], "utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics, like list

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.array(list(self), dtype=str)
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        shown = ", ".join(repr(text) for text in self[:3])
        return f"StringColumn([{shown}{', ...' if len(self) > 3 else ''}], rows={len(self)})"


class StringBuilder:
    """Appends strings to a growing buffer; :meth:`finish` makes the :class:`StringColumn`."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")

    def append(self, text: str) -> None:
        """Add ``text`` as the next row."""
        self._data += text.encode("utf-8")
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def finish(self) -> StringColumn:
        """The column of every appended row (the builder may be dropped afterwards)."""
        ends = np.frombuffer(self._ends, dtype=np.int64).copy() if self._ends else np.zeros(0, np.int64)
        starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]]) if len(ends) else ends.copy()
        # No copy: the buffer is exported, so the builder can no longer grow it under the column.
        data = np.frombuffer(self._data, dtype=np.uint8) if self._data else np.zeros(0, np.uint8)
        return StringColumn(data, starts, ends)
