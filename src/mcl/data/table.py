"""Image tables: the single input format of every downstream step.

An image table is a directory holding ``labels.csv`` with the columns ``path`` (image path relative
to the CSV), an optional ``split`` (``train``/``test``; without it every row is ``train``), an optional
``caption`` (free text for multimodal training) and any number of attribute columns (categorical
strings, used only for evaluation).

Images are decoded once per image size into ``<table>/.mcl_cache/images_<size>.npy`` and memory-mapped
afterwards. A small JSON key next to it (row count, hash of ``labels.csv``, sizes and mtimes of the
images) makes any change to the table invalidate the cache.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from mcl.errors import ConfigError, DataError, one_line
from mcl.io import atomic_open, write_bytes, write_json

logger = logging.getLogger("mcl")

LABELS_FILE = "labels.csv"
CACHE_DIR = ".mcl_cache"
SPLITS = ("train", "test")
RESERVED_COLUMNS = ("path", "split", "caption")
ON_BAD_IMAGE = ("error", "skip")

# Bump when decoding changes (resampling, colour conversion) so that old caches are not reused.
_CACHE_VERSION = 1
# Bounds the number of pending futures (and tqdm updates) when decoding huge tables.
_DECODE_CHUNK = 4096
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class ImageTable:
    """Decoded images of an image table with their split, attributes and captions (row-aligned)."""

    images: np.ndarray
    split: np.ndarray
    attributes: dict[str, np.ndarray]
    attribute_values: dict[str, list[str]]
    paths: list[str]
    captions: list[str] | None
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
            paths=[self.paths[i] for i in rows],
            captions=None if self.captions is None else [self.captions[i] for i in rows],
            root=self.root,
        )


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    # Fancy indexing would copy a memory-mapped table into RAM; a slice is a view.
    if len(rows) == 0:
        return slice(0, 0)
    if rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


# ---------------------------------------------------------------------------------------------- labels


@dataclass
class _Labels:
    """Parsed ``labels.csv``: one entry per row, in file order."""

    csv_path: Path
    digest: str
    lines: list[int]
    paths: list[str]
    split: list[str]
    captions: list[str] | None
    attributes: dict[str, list[str]]


def _read_labels(root: Path) -> _Labels:
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
        raise DataError(f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        _check_header(csv_path, header)
        labels = _Labels(csv_path, hashlib.sha256(raw).hexdigest(), [], [], [], None, {})
        _read_rows(reader, header, labels)
    except csv.Error as exc:
        raise DataError(f"{csv_path} line {reader.line_num}: malformed CSV ({exc})") from None
    if not labels.paths:
        raise DataError(f"{csv_path}: no image rows (expected a header line and at least one row)")
    return labels


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


def _read_rows(reader: _CsvReader, header: list[str], labels: _Labels) -> None:
    attribute_names = [name for name in header if name not in RESERVED_COLUMNS]
    labels.attributes = {name: [] for name in attribute_names}
    if "caption" in header:
        labels.captions = []
    for row in reader:
        line = reader.line_num
        if not row:
            continue  # blank line
        where = f"{labels.csv_path} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} ({', '.join(header)})")
        cells = dict(zip(header, row, strict=True))
        path = cells["path"].strip()
        if not path:
            raise DataError(f"{where}: column 'path' is empty")
        split = cells.get("split", "train").strip().lower()
        if split not in SPLITS:
            raise DataError(f"{where}: column 'split' is {cells['split']!r}; expected 'train' or 'test'")
        labels.lines.append(line)
        labels.paths.append(path)
        labels.split.append(split)
        if labels.captions is not None:
            labels.captions.append(cells["caption"])
        for name in attribute_names:
            labels.attributes[name].append(cells[name].strip())


# ---------------------------------------------------------------------------------------------- decoding


@dataclass
class _BadImage:
    row: int
    path: str
    reason: str


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_GREY_MODES:
        # Pillow clips (rather than rescales) 16-bit grey to 8 bits, which would turn most pixels white.
        grey = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when palette transparency is dropped directly
    # Alpha is dropped, not composited, like torchvision's default image loader.
    return image.convert("RGB")


def _decode_image(path: Path, size: int) -> np.ndarray:
    """Decode one image of any mode/size into uint8 RGB ``(size, size, 3)`` (aspect ratio not kept)."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))  # DCT-domain downscaling: much faster for big photos
        rgb = _to_rgb(ImageOps.exif_transpose(image))
    if rgb.size != (size, size):
        # Bilinear resampling in Pillow widens its kernel when shrinking, so it is antialiased.
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = one_line(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


def _decode_all(
    root: Path, labels: _Labels, size: int, out: np.ndarray, progress: bool, fail_fast: bool
) -> list[_BadImage]:
    """Decode every row into ``out``; return the unreadable ones (only the first when ``fail_fast``)."""

    def decode(row: int) -> _BadImage | None:
        try:
            out[row] = _decode_image(root / labels.paths[row], size)
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            return _BadImage(row, labels.paths[row], _failure_reason(exc))
        return None

    bad: list[_BadImage] = []
    n = len(labels.paths)
    workers = min(8, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=n, disable=not progress, unit="img", desc=f"decoding {root.name}") as bar,
    ):
        for start in range(0, n, _DECODE_CHUNK):
            for result in pool.map(decode, range(start, min(n, start + _DECODE_CHUNK))):
                bar.update()
                if result is not None:
                    bad.append(result)
                    if fail_fast:
                        pool.shutdown(cancel_futures=True)
                        return bad
    return bad


# ---------------------------------------------------------------------------------------------- cache


def _cache_files(root: Path, size: int) -> tuple[Path, Path]:
    cache = root / CACHE_DIR
    return cache / f"images_{size}.npy", cache / f"images_{size}.json"


def _cache_key(root: Path, labels: _Labels, size: int) -> dict[str, object]:
    files = hashlib.sha256()
    for path in labels.paths:
        try:
            stat = (root / path).stat()
            files.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            files.update(f"{path}\0missing\n".encode())
    return {
        "version": _CACHE_VERSION,
        "image_size": size,
        "rows": len(labels.paths),
        "labels_sha256": labels.digest,
        "files_sha256": files.hexdigest(),
    }


def _read_cache(root: Path, size: int, key: dict[str, object]) -> tuple[np.ndarray, list[_BadImage]] | None:
    npy, meta = _cache_files(root, size)
    try:
        stored = json.loads(meta.read_text())
        if stored.get("key") != key:
            return None
        bad = [_BadImage(**entry) for entry in stored["bad"]]
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a missing or damaged cache is simply rebuilt
    if images.dtype != np.uint8 or images.shape != (int(key["rows"]) - len(bad), size, size, 3):
        return None
    return images, bad


def _write_cache_meta(meta: Path, key: dict[str, object], bad: list[_BadImage]) -> None:
    write_json(meta, {"key": key, "bad": [asdict(entry) for entry in bad]})


def _temp_memmap(target: Path, shape: tuple[int, ...]) -> tuple[np.memmap, Path] | None:
    """A uint8 .npy memory map on a temp file next to ``target``; None where that is not writable.

    Decoding straight into it keeps memory flat for big tables. ``io.atomic_open`` cannot be used
    because a memory map needs a path, so this does the same temp-then-rename by hand.
    """
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            # A sparse file would raise SIGBUS (not an exception) on a full disk while decoding.
            with open(tmp, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.path.getsize(tmp))
        return array, tmp
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        return None


def _commit_cache(
    images: np.memmap, tmp: Path, root: Path, size: int, key: dict[str, object], bad: list[_BadImage]
) -> np.ndarray:
    """Move a fully decoded temp memory map into the cache and return the cached array, memory-mapped."""
    npy, meta = _cache_files(root, size)
    try:
        images.flush()
        if bad:
            with atomic_open(npy) as handle:  # bad images are rare: compacting in RAM is fine
                np.save(handle, _drop_rows(images, bad))
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, npy)
        _write_cache_meta(meta, key, bad)
        return np.load(npy, mmap_mode="r")
    except OSError as exc:
        logger.debug("%s: image cache not written (%s)", root, exc)
        kept = _drop_rows(images, bad)
        tmp.unlink(missing_ok=True)
        return kept


def _drop_rows(images: np.ndarray, bad: list[_BadImage]) -> np.ndarray:
    if not bad:
        return images
    return np.delete(images, [entry.row for entry in bad], axis=0)


def _load_images(
    root: Path, labels: _Labels, size: int, cache: bool, progress: bool, fail_fast: bool
) -> tuple[np.ndarray, list[_BadImage]]:
    """Decoded images of the readable rows, and the unreadable rows (from the cache when valid)."""
    key = _cache_key(root, labels, size) if cache else {}
    if cache and (hit := _read_cache(root, size, key)) is not None:
        return hit
    shape = (len(labels.paths), size, size, 3)
    temp = _temp_memmap(_cache_files(root, size)[0], shape) if cache else None
    if temp is None:
        images = np.empty(shape, dtype=np.uint8)
        bad = _decode_all(root, labels, size, images, progress, fail_fast)
        return _drop_rows(images, bad), bad
    images, tmp = temp
    try:
        bad = _decode_all(root, labels, size, images, progress, fail_fast)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if bad and fail_fast:
        tmp.unlink(missing_ok=True)
        return images, bad  # the caller raises; nothing is cached
    return _commit_cache(images, tmp, root, size, key, bad), bad


# ---------------------------------------------------------------------------------------------- load


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


def load_table(
    directory: str | os.PathLike,
    image_size: int,
    on_bad_image: str = "error",
    cache: bool = True,
    progress: bool = True,
) -> ImageTable:
    """Load an image table, decoding every image to uint8 RGB ``image_size x image_size``.

    ``on_bad_image='error'`` raises :class:`DataError` on the first missing/corrupt image;
    ``'skip'`` drops those rows and logs how many. The decoded images are cached under
    ``directory/.mcl_cache`` (skipped silently where the directory is not writable).
    """
    check_load_options(image_size, on_bad_image)
    root = Path(directory)
    labels = _read_labels(root)
    images, bad = _load_images(root, labels, image_size, cache, progress, fail_fast=on_bad_image == "error")
    if bad:
        _report_bad(labels, bad, on_bad_image)
    return _build_table(root, labels, images, {entry.row for entry in bad})


def _report_bad(labels: _Labels, bad: list[_BadImage], on_bad_image: str) -> None:
    first = bad[0]
    if on_bad_image == "error":
        raise DataError(
            f"{labels.csv_path} line {labels.lines[first.row]}: column 'path': image {first.path!r} "
            f"cannot be read ({first.reason}); fix it or load with on_bad_image='skip'"
        )
    if len(bad) == len(labels.paths):
        raise DataError(
            f"{labels.csv_path}: none of the {len(bad)} images can be read "
            f"(first: {first.path!r}, {first.reason})"
        )
    examples = ", ".join(repr(entry.path) for entry in bad[:5])
    logger.warning("%s: skipped %d unreadable image(s): %s", labels.csv_path, len(bad), examples)


def _build_table(root: Path, labels: _Labels, images: np.ndarray, dropped: set[int]) -> ImageTable:
    keep = [row for row in range(len(labels.paths)) if row not in dropped]
    attributes: dict[str, np.ndarray] = {}
    attribute_values: dict[str, list[str]] = {}
    for name, column in labels.attributes.items():
        values, codes = np.unique(np.array([column[row] for row in keep], dtype=str), return_inverse=True)
        attributes[name] = codes.reshape(-1).astype(np.int64)
        attribute_values[name] = [str(value) for value in values]
    return ImageTable(
        images=images,
        split=np.array([labels.split[row] for row in keep], dtype=str),
        attributes=attributes,
        attribute_values=attribute_values,
        paths=[labels.paths[row] for row in keep],
        captions=None if labels.captions is None else [labels.captions[row] for row in keep],
        root=root,
    )


# ---------------------------------------------------------------------------------------------- write


def write_table(
    directory: str | os.PathLike,
    images: np.ndarray,
    attributes: dict[str, list[str]],
    split: list[str],
    captions: list[str] | None = None,
    *,
    progress: bool = False,
) -> Path:
    """Write ``images`` (uint8 ``(N, H, W, 3)``) as an image table and return its directory.

    PNGs go to ``directory/images/000000.png ...``; ``labels.csv`` is written last (atomically), so
    an interrupted write leaves no table. Square images also prime the decode cache for size ``H``.
    """
    n = _check_write_args(images, attributes, split, captions)
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels_path = root / LABELS_FILE
    labels_path.unlink(missing_ok=True)  # a table being rewritten must not look complete before it is
    paths = [f"images/{row:06d}.png" for row in range(n)]
    _write_pngs(root, paths, images, progress)
    write_bytes(labels_path, _labels_csv(paths, split, captions, attributes))
    if images.shape[1] == images.shape[2]:
        _prime_cache(root, images)
    return root


def _check_write_args(
    images: np.ndarray, attributes: dict[str, list[str]], split: Sequence[str], captions: Sequence[str] | None
) -> int:
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[3] != 3
    ):
        raise ValueError("images must be a uint8 array of shape (N, H, W, 3)")
    n = len(images)
    columns = {"split": split, **({"caption": captions} if captions is not None else {}), **attributes}
    for name, column in columns.items():
        if len(column) != n:
            raise ValueError(f"column {name!r} has {len(column)} values for {n} images")
    reserved = sorted(set(attributes) & set(RESERVED_COLUMNS))
    if reserved:
        raise ValueError(f"attribute names {reserved} are reserved column names")
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise ValueError(f"split values must be 'train' or 'test', got {unknown}")
    return n


def _write_pngs(root: Path, paths: list[str], images: np.ndarray, progress: bool) -> None:
    def write(row: int) -> None:
        Image.fromarray(np.ascontiguousarray(images[row]), "RGB").save(root / paths[row])

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        # list() re-raises the first write error here.
        list(
            tqdm(
                pool.map(write, range(len(paths))),
                total=len(paths),
                disable=not progress,
                unit="img",
                desc=f"writing {root.name}",
            )
        )


def _labels_csv(
    paths: list[str], split: Sequence[str], captions: Sequence[str] | None, attributes: dict[str, list[str]]
) -> bytes:
    columns: dict[str, Sequence[str]] = {"path": paths, "split": split}
    if captions is not None:
        columns["caption"] = captions
    columns.update(attributes)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buffer.getvalue().encode()


def _prime_cache(root: Path, images: np.ndarray) -> None:
    # PNG is lossless and no resize happens at the written size, so this equals what decoding would give.
    size = images.shape[1]
    npy, meta = _cache_files(root, size)
    with contextlib.suppress(OSError):
        key = _cache_key(root, _read_labels(root), size)
        with atomic_open(npy) as handle:
            np.save(handle, np.ascontiguousarray(images))
        _write_cache_meta(meta, key, [])


# ---------------------------------------------------------------------------------------------- generators


def check_generator_args(n_train: int, n_test: int, image_size: int, min_size: int = 8) -> None:
    """Raise :class:`ConfigError` unless the sizes of a synthetic data set make sense."""
    for name, value, low in (
        ("n_train", n_train, 0),
        ("n_test", n_test, 0),
        ("image_size", image_size, min_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}: got {value!r}; expected an integer >= {low}")
    if n_train + n_test == 0:
        raise ConfigError("n_train + n_test: got 0; expected at least one image")


def split_column(n_train: int, n_test: int) -> list[str]:
    """``n_train`` times 'train' then ``n_test`` times 'test'."""
    return ["train"] * n_train + ["test"] * n_test


def balanced_codes(rng: np.random.Generator, n_train: int, n_test: int, n_values: int) -> np.ndarray:
    """Codes ``0..n_values-1`` in random order, each as frequent as possible within each split."""
    return np.concatenate([rng.permutation(np.arange(n) % n_values) for n in (n_train, n_test)]).astype(
        np.int64
    )
