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
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mcl.data.table.core import LABELS_FILE, RESERVED_COLUMNS, SPLITS, Rows
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
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # exc.object is the decoded input (after any BOM), so its newlines count the lines before the bad byte.
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{csv_path} line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
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
    assert rows.lines is not None
    attribute_names = [name for name in header if name not in RESERVED_COLUMNS]
    rows.attributes = {name: [] for name in attribute_names}
    if "caption" in header:
        rows.captions = []
    for row in reader:
        line = reader.line_num
        if not row:
            continue  # blank line
        where = f"{rows.origin} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} ({', '.join(header)})")
        cells = dict(zip(header, row, strict=True))
        path = cells["path"].strip()
        if not path:
            raise DataError(f"{where}: column 'path' is empty")
        split = cells.get("split", "train").strip().lower()
        if split not in SPLITS:
            raise DataError(f"{where}: column 'split' is {cells['split']!r}; expected 'train' or 'test'")
        rows.lines.append(line)
        rows.paths.append(path)
        rows.split.append(split)
        if rows.captions is not None:
            rows.captions.append(cells["caption"])
        for name in attribute_names:
            rows.attributes[name].append(cells[name].strip())
