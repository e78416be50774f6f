"""Reading ``labels.csv`` into :class:`~mcl.data.table.core.Rows`.

Format: a header line with a ``path`` column (image path relative to the CSV), an optional ``split``
(``train``/``test``, case-insensitive; without it every row is ``train``), an optional ``caption`` (free
text, kept verbatim) and any number of attribute columns (categorical strings, stripped). Blank lines
are skipped. Every problem is a one-line :class:`~mcl.errors.DataError` naming the file and line, e.g.
``labels.csv line 3: column 'split' is 'val'; expected 'train' or 'test'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mcl.data.table.core import LABELS_FILE, RESERVED_COLUMNS, SPLITS, Rows
from mcl.data.table.strings import StringBuilder
from mcl.errors import DataError


def read_labels(root: Path) -> Rows:
    """Parse ``root/labels.csv``; rows keep file order and remember their line numbers."""
    if not root.is_dir():
        raise DataError(f"{root}: image table directory not found")
    csv_path = root / LABELS_FILE
    try:
        raw = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{csv_path}: file not found; an image table needs labels.csv with a 'path' column"
        ) from None
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot be read ({exc.strerror})") from None
    try:
        raw.decode("utf-8-sig")  # checked whole, so a bad byte is named by its line; the reader decodes again
    except UnicodeDecodeError as exc:
        # exc.object is the decoded input (after any BOM), so its newlines count the lines before the bad byte.
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{csv_path} line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        ) from None
    # Decoded in chunks while parsing: a StringIO of the whole text would hold up to 4 bytes a character.
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        _check_header(csv_path, header)
        rows = Rows(csv_path, hashlib.sha256(raw).hexdigest(), [], [], None, {}, lines=[])
        _read_rows(reader, header, rows)
    except csv.Error as exc:
        raise DataError(f"{csv_path} line {reader.line_num}: malformed CSV ({exc})") from None
    if not rows.paths:
        raise DataError(f"{csv_path}: no image rows (expected a header line and at least one row)")
    return rows


def _check_header(csv_path: Path, header: list[str]) -> None:
    if not header:
        raise DataError(f"{csv_path}: empty file; expected a header line with a 'path' column")
    for index, name in enumerate(header, start=1):
        if not name:
            raise DataError(f"{csv_path} line 1: column {index} has an empty name")
        if header.count(name) > 1:
            raise DataError(f"{csv_path} line 1: column {name!r} appears more than once")
    if "path" not in header:
        raise DataError(f"{csv_path} line 1: no 'path' column (columns: {', '.join(header)})")


class _CsvReader(Protocol):
    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...


def _read_rows(reader: _CsvReader, header: list[str], rows: Rows) -> None:
    # Built while reading, so no per-row Python object outlives its CSV line: paths and captions go
    # into byte columns, line numbers into an int64 array, split and attribute values are interned
    # (one str per distinct value; the lists hold pointers).
    attribute_names = [name for name in header if name not in RESERVED_COLUMNS]
    attributes: dict[str, list[str]] = {name: [] for name in attribute_names}
    distinct: dict[str, dict[str, str]] = {name: {} for name in attribute_names}
    paths, captions = StringBuilder(), StringBuilder() if "caption" in header else None
    lines, split_column = array("q"), []
    interned_splits = {name: name for name in SPLITS}
    positions = {name: header.index(name) for name in header}
    path_at, split_at, caption_at = positions["path"], positions.get("split"), positions.get("caption")
    for row in reader:
        line = reader.line_num
        if not row:
            continue  # blank line
        if len(row) != len(header):
            where = f"{rows.origin} line {line}"
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} ({', '.join(header)})")
        path = row[path_at].strip()
        if not path:
            raise DataError(f"{rows.origin} line {line}: column 'path' is empty")
        split = interned_splits.get(row[split_at].strip().lower() if split_at is not None else "train")
        if split is None:
            raise DataError(f"{rows.origin} line {line}: column 'split' is {row[split_at]!r}; "
                            "expected 'train' or 'test'")
        lines.append(line)
        paths.append(path)
        split_column.append(split)
        if captions is not None:
            captions.append(row[caption_at])
        for name in attribute_names:
            value = row[positions[name]].strip()
            attributes[name].append(distinct[name].setdefault(value, value))
    rows.lines, rows.paths, rows.split = lines, paths.finish(), split_column
    rows.captions = None if captions is None else captions.finish()
    rows.attributes = attributes
