"""Writing image tables (PNGs + ``labels.csv``) and the helpers the synthetic generators share.

``write_table(dir, images, {"shape": [...]}, ["train", ...])`` writes ``dir/images/000000.png ...``
then ``dir/labels.csv`` (atomically, last), and primes the decode cache for square images so that
the first :func:`~mcl.data.table.load.load_table` at the written size decodes nothing.

``format`` chooses the layout: ``png`` (default, lossless), ``jpeg`` (``images/000000.jpg``, quality
``quality``; no cache priming, decoding is lossy) or ``webdataset``: ``dir/shard-000000.tar ...`` of
``shard_size`` samples each, sample ``KEY`` (the row, ``000000``) as ``KEY.jpg`` + ``KEY.json``
(``{"split": ..., <attribute>: <value>, ...}``) + ``KEY.txt`` (when there are captions); no
``labels.csv``. Each shard is written atomically, then ``shards.json`` (``{"samples": N, "shards": [names]}``)
last, so its presence marks a complete set; stale ``shard-*.tar`` files are removed first.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mcl.data.table.cache import cache_files, cache_key, write_cache_meta
from mcl.data.table.core import LABELS_FILE, RESERVED_COLUMNS, SPLITS
from mcl.data.table.decode import ImageSizes
from mcl.data.table.labels import read_labels
from mcl.errors import ConfigError
from mcl.files import atomic_open, write_bytes


def write_table(
    directory: str | os.PathLike,
    images: np.ndarray,
    attributes: dict[str, list[str]],
    split: list[str],
    captions: list[str] | None = None,
    *,
    progress: bool = False,
    format: str = "png",
    shard_size: int = 1000,
    quality: int = 95,
) -> Path:
    """Write ``images`` (uint8 ``(N, H, W, 3)``) as an image table and return its directory.

    PNGs (or JPEGs) go to ``directory/images/000000.png ...``; ``labels.csv`` is written last
    (atomically), so an interrupted write leaves no table. Square PNG images also prime the decode
    cache for size ``H``. ``format='webdataset'`` writes tar shards instead (see the module docstring).
    """
    n = _check_write_args(images, attributes, split, captions)
    if format not in FORMATS:
        raise ConfigError(f"format: got {format!r}; expected one of {', '.join(FORMATS)}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size: got {shard_size!r}; expected a positive integer")
    root = Path(directory)
    if format == "webdataset":
        _write_shards(root, images, attributes, split, captions, shard_size, quality, progress)
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels_path = root / LABELS_FILE
    labels_path.unlink(missing_ok=True)  # a table being rewritten must not look complete before it is
    suffix = "png" if format == "png" else "jpg"
    paths = [f"images/{row:06d}.{suffix}" for row in range(n)]
    _write_images(root, paths, images, progress, quality)
    write_bytes(labels_path, _labels_csv(paths, split, captions, attributes))
    if format == "png" and images.shape[1] == images.shape[2]:
        _prime_cache(root, images)
    return root


FORMATS = ("png", "jpeg", "webdataset")
SHARDS_FILE = "shards.json"  # written last by format='webdataset': the set is complete


def _encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


def _write_shards(root: Path, images: np.ndarray, attributes: dict[str, list[str]], split: Sequence[str],
                  captions: Sequence[str] | None, shard_size: int, quality: int, progress: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / SHARDS_FILE).unlink(missing_ok=True)  # a set being rewritten must not look complete before it is
    for stale in root.glob("shard-*.tar"):
        stale.unlink()
    names: list[str] = []
    n = len(images)
    bar = tqdm(total=n, disable=not (progress and sys.stderr.isatty()), unit="img", desc=f"writing {root.name}")
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, bar:
        for shard, start in enumerate(range(0, n, shard_size)):
            rows = range(start, min(n, start + shard_size))
            encoded = list(pool.map(lambda row: _encode(images[row], "JPEG", quality), rows))
            names.append(f"shard-{shard:06d}.tar")
            with atomic_open(root / names[-1]) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
                for row, jpeg in zip(rows, encoded, strict=True):
                    meta = {"split": split[row], **{name: column[row] for name, column in attributes.items()}}
                    members = [("jpg", jpeg), ("json", json.dumps(meta).encode())]
                    if captions is not None:
                        members.append(("txt", captions[row].encode()))
                    for extension, data in members:
                        info = tarfile.TarInfo(f"{row:06d}.{extension}")
                        info.size, info.mode, info.mtime = len(data), 0o644, 0
                        tar.addfile(info, io.BytesIO(data))
            bar.update(len(rows))
    write_bytes(root / SHARDS_FILE, (json.dumps({"samples": n, "shards": names}) + "\n").encode())


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


def _write_images(root: Path, paths: list[str], images: np.ndarray, progress: bool, quality: int) -> None:
    def write(row: int) -> None:
        Image.fromarray(np.ascontiguousarray(images[row]), "RGB").save(root / paths[row], quality=quality)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        # list() re-raises the first write error here.
        list(
            tqdm(
                pool.map(write, range(len(paths))),
                total=len(paths),
                disable=not (progress and sys.stderr.isatty()),
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
    n, size = images.shape[:2]
    npy, meta = cache_files(root, size)
    with contextlib.suppress(OSError):
        key = cache_key(root, read_labels(root), size)
        with atomic_open(npy) as handle:
            np.save(handle, np.ascontiguousarray(images))
        sizes = ImageSizes((size, size), (size, size), 0, n) if n else None
        write_cache_meta(meta, key, [], sizes)


# ---------------------------------------------------------------------------------------------- generators


_MAX_GENERATED_ROWS = 100_000_000
_MAX_GENERATED_SIZE = 1024


def check_generator_args(n_train: int, n_test: int, image_size: int, min_size: int = 8) -> None:
    """Raise :class:`ConfigError` unless the sizes of a synthetic data set make sense (and are bounded:
    at most 10^8 images per split, 1024 pixels a side, so a typo cannot fill the disk)."""
    for name, value, low, high in (
        ("n_train", n_train, 0, _MAX_GENERATED_ROWS),
        ("n_test", n_test, 0, _MAX_GENERATED_ROWS),
        ("image_size", image_size, min_size, _MAX_GENERATED_SIZE),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{name}: got {value!r}; expected an integer in [{low}, {high}]")
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
