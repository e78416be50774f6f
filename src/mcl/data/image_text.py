"""Image-caption data sets in the layouts that web-scale tools write.

* **img2dataset ``files``**: shard folders of ``<key>.jpg`` next to ``<key>.txt`` (and ``<key>.json``,
  ignored), e.g. ``00000/000000001.jpg`` + ``00000/000000001.txt``. Images and captions are paired
  by their path without suffix, never by position, so a missing file cannot shift captions onto the
  wrong images; unpaired files are skipped and reported (count and first paths) in the log.
* **WebDataset**: ``.tar`` shards whose members are grouped by key (the member name up to the first
  dot of its base name: ``000001.jpg`` and ``000001.txt`` form one sample). Read as a stream with
  the standard :mod:`tarfile` module; the ``webdataset`` package is not needed.

Both load into an :class:`~mcl.data.table.ImageTable` (split ``train``, no attributes, ``paths``
holding the sample keys), with images centre-cropped to a square and resized to ``image_size``.

For shards that do not fit in memory (ids, splits and attributes from ``KEY.json``, single-group
batches streamed under bounded memory) use :mod:`mcl.data.webdataset` and :mod:`mcl.data.stream`.

Example:
    >>> table = load_img2dataset("cc3m/", image_size=64)
    >>> table = load_webdataset("shards/data-{000..009}.tar", image_size=64, limit=10_000)
"""

from __future__ import annotations

import itertools
import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from mcl.data.shard_files import (
    IMAGE_EXTENSIONS,
    MAX_TEXT_BYTES,
    TEXT_EXTENSIONS,
    Member,
    ShardFormatError,
    check_regular,
    expand_shards,
    open_shard,
    read_members,
    resolve_shards,
    split_member,
)
from mcl.data.table import ImageTable, check_load_options
from mcl.data.table.decode import decode
from mcl.errors import DataError, one_line

logger = logging.getLogger("mcl")

__all__ = ["ImageTextPair", "decode_image", "expand_shards", "load_img2dataset", "load_webdataset",
           "scan_img2dataset"]
TEXT_EXTENSION = "txt"
_EXAMPLES = 5


@dataclass(frozen=True)
class ImageTextPair:
    """One paired sample of an img2dataset folder."""

    key: str
    image_path: Path
    caption: str


# ---------------------------------------------------------------------------------------------- decoding


def decode_image(source: str | os.PathLike | bytes, image_size: int | None = None, fit: str = "crop") -> np.ndarray:
    """Decode to uint8 RGB ``(H, W, 3)``; with ``image_size``, resized to a square by ``fit``
    (:func:`mcl.data.table.decode.decode`).

    The default ``crop`` (rather than squashing) keeps the proportions of web photos, as CLIP's
    preprocessing does; ``squash`` gives an image table's pixels.
    """
    return decode(source, image_size, fit)[0]


def _report_unpaired(where: str | os.PathLike, what: str, keys: Sequence[str]) -> None:
    if keys:
        examples = ", ".join(repr(k) for k in keys[:_EXAMPLES])
        logger.warning("%s: skipped %d %s (first: %s)", where, len(keys), what, examples)


def _table(images: list[np.ndarray], captions: list[str], keys: list[str], root: Path) -> ImageTable:
    return ImageTable(images=np.stack(images), split=np.full(len(keys), "train"), attributes={}, attribute_values={},
                      paths=keys, captions=captions, root=root)


# ---------------------------------------------------------------------------------------------- img2dataset


def _files_by_key(root: Path) -> dict[str, dict[str, Path]]:
    """``{key: {extension: path}}`` of every file below ``root`` (hidden files and folders skipped)."""
    found: dict[str, dict[str, Path]] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory, name)
            if name.startswith(".") or not path.suffix:
                continue
            key = path.relative_to(root).with_suffix("").as_posix()
            found.setdefault(key, {})[path.suffix[1:].lower()] = path
    return found


def _read_caption(path: Path, max_text_bytes: int = MAX_TEXT_BYTES) -> str:
    size = check_regular(path, "caption").st_size  # a FIFO would block, a device never end
    if size > max_text_bytes:
        raise DataError(f"{path}: {size} bytes, more than data.max_text_bytes ({max_text_bytes}) for a caption; "
                        "raise data.max_text_bytes if the file is genuine")
    try:
        with open(path, "rb") as handle:
            return handle.read(max_text_bytes + 1)[:max_text_bytes].decode("utf-8", errors="replace").strip()
    except OSError as exc:
        raise DataError(f"{path}: caption cannot be read ({exc.strerror})") from None


def scan_img2dataset(directory: str | os.PathLike, max_text_bytes: int = MAX_TEXT_BYTES) -> list[ImageTextPair]:
    """Image/caption pairs of an img2dataset ``files`` folder, paired by key, sorted by key.

    Images without a (non-empty) caption and captions without an image are skipped and logged.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: img2dataset directory not found")
    pairs: list[ImageTextPair] = []
    no_caption: list[str] = []
    no_image: list[str] = []
    for key, files in _files_by_key(root).items():
        image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
        text = files.get(TEXT_EXTENSION)
        if image is None:
            if text is not None:
                no_image.append(text.relative_to(root).as_posix())
            continue
        caption = _read_caption(text, max_text_bytes) if text is not None else ""
        if not caption:
            no_caption.append(image.relative_to(root).as_posix())
            continue
        pairs.append(ImageTextPair(key, image, caption))
    _report_unpaired(root, "image(s) without a caption", no_caption)
    _report_unpaired(root, "caption(s) without an image", no_image)
    if not pairs:
        raise DataError(f"{root}: no image/caption pairs (expected <key>.jpg next to <key>.txt in shard folders)")
    return pairs


def load_img2dataset(directory: str | os.PathLike, image_size: int, limit: int | None = None,
                     on_bad_image: str = "error", max_text_bytes: int = MAX_TEXT_BYTES,
                     fit: str = "crop") -> ImageTable:
    """Decode the pairs of an img2dataset ``files`` folder into an :class:`ImageTable`.

    ``limit`` keeps the first pairs by key. ``on_bad_image='skip'`` drops (and logs) unreadable
    images instead of raising :class:`DataError`.
    """
    check_load_options(image_size, on_bad_image, size_optional=True)
    pairs = scan_img2dataset(directory, max_text_bytes)[:limit]

    def decode(pair: ImageTextPair) -> np.ndarray | None:
        try:
            return decode_image(pair.image_path, image_size, fit)
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            if on_bad_image == "error":
                raise DataError(f"{pair.image_path}: image cannot be read ({type(exc).__name__}: {exc})") from None
            return None

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(decode, pairs))
    kept = [(pair, image) for pair, image in zip(pairs, decoded, strict=True) if image is not None]
    _report_unpaired(directory, "unreadable image(s)", [p.key for p, i in zip(pairs, decoded, strict=True)
                                                        if i is None])
    if not kept:
        raise DataError(f"{directory}: none of the {len(pairs)} images can be read")
    return _table([image for _, image in kept], [pair.caption for pair, _ in kept],
                  [pair.key for pair, _ in kept], Path(directory))


# ---------------------------------------------------------------------------------------------- WebDataset


def _tar_samples(shard: Path, max_text_bytes: int = MAX_TEXT_BYTES) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` per sample, in member order (members of a sample are adjacent).

    Members are listed by the one tar reader (:func:`~mcl.data.shard_files.read_members`: size limits,
    links and non-regular members handled there), then each sample's bytes are read forward by offset.
    """
    with open_shard(shard) as raw:
        try:
            members, odd = read_members(shard, raw, TEXT_EXTENSIONS, max_text_bytes)
        except ShardFormatError as exc:
            raise DataError(f"{shard}: not a readable tar shard ({exc.reason})") from None
        for reason, where in odd.items():
            _report_unpaired(shard, reason, where)
        key, sample = None, {}
        for member in members:
            if member.name.rpartition("/")[2].startswith("."):
                continue
            member_key, extension = split_member(member.name)
            if member_key != key and sample:
                yield key, sample
                sample = {}
            key = member_key
            sample[extension] = member.data if member.data is not None else _read_at(shard, raw, member)
        if sample:
            yield key, sample


def _read_at(shard: Path, raw: IO[bytes], member: Member) -> bytes:
    try:
        raw.seek(member.offset)
        data = raw.read(member.size)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{shard}: truncated or corrupt shard ({one_line(exc)})") from None
    if len(data) != member.size:
        raise DataError(f"{shard}: truncated shard (member {member.name!r} needs {member.size} bytes)")
    return data


def _webdataset_samples(shards: list[Path], image_size: int | None, on_bad_image: str,
                        max_text_bytes: int = MAX_TEXT_BYTES, fit: str = "crop"
                        ) -> Iterator[tuple[str, np.ndarray, str]]:
    """``(shard#key, image, caption)`` of every complete, readable sample."""
    for shard in shards:
        unpaired: list[str] = []
        unreadable: list[str] = []
        for key, sample in _tar_samples(shard, max_text_bytes):
            image_bytes = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
            caption = sample.get(TEXT_EXTENSION, b"").decode("utf-8", errors="replace").strip()
            if image_bytes is None or not caption:
                unpaired.append(key)
                continue
            try:
                image = decode_image(image_bytes, image_size, fit)
            except Exception as exc:  # Pillow raises many unrelated types for corrupt files
                if on_bad_image == "error":
                    raise DataError(f"{shard}: sample {key!r}: image cannot be read ({type(exc).__name__})") from None
                unreadable.append(key)
                continue
            yield f"{shard.name}#{key}", image, caption
        _report_unpaired(shard, "sample(s) without both an image and a caption", unpaired)
        _report_unpaired(shard, "unreadable image(s)", unreadable)


def load_webdataset(shards: str | os.PathLike | Iterable[str | os.PathLike], image_size: int,
                    limit: int | None = None, on_bad_image: str = "error",
                    max_text_bytes: int = MAX_TEXT_BYTES, fit: str = "crop") -> ImageTable:
    """Materialise (the first ``limit`` pairs of) WebDataset shards into an :class:`ImageTable`.

    For small sets only: every image is held in memory. ``paths`` holds ``<shard file>#<key>``.
    """
    check_load_options(image_size, on_bad_image, size_optional=True)
    paths = resolve_shards(shards)  # a directory of shards, a brace pattern, one file or a list
    samples = list(itertools.islice(_webdataset_samples(paths, image_size, on_bad_image, max_text_bytes, fit), limit))
    if not samples:
        raise DataError(f"{paths[0]}: no image/caption samples in {len(paths)} shard(s)")
    keys, images, captions = (list(column) for column in zip(*samples, strict=True))
    return _table(images, captions, keys, paths[0].parent)
