"""WebDataset tar shards as a source: an index pass, then image bytes read by offset, decoded on demand.

Layout: a directory of ``.tar`` shards (or a brace pattern ``DIR/shard-{000000..000099}.tar``, or a
list). A sample is the group of members sharing a key (member name up to the first dot of its base
name): ``KEY.jpg|jpeg|png|webp`` (required), ``KEY.txt`` (optional caption), ``KEY.json`` (optional
object: attribute fields, and ``"split": "train"|"test"``, default ``train``). Shards may be gzip,
bzip2 or xz compressed (detected by magic bytes).

**Index pass** (:func:`index_shards`): one sequential pass over each shard's tar *headers*; only the
small ``.txt``/``.json`` members are read, image bytes are skipped by a seek (no decoding). It gives
every sample a stable id (shard order, then the order of its image member in the shard), its key,
split, attributes, caption, and where its image bytes lie (``offset``, ``size`` in the uncompressed
tar stream). Memory: a few int64 and strings per sample (~100-200 bytes), never pixels.

**Reading** (:class:`ShardReader`): image bytes are read at their offsets, in increasing offset
order within a shard (sequential, forward seeks only, so compressed shards work too). This is our
own reader: the ``webdataset`` package parses every member with :mod:`tarfile` in stream mode
(reading captions and JSON of every sample again), while we read only the image byte ranges; it is
therefore not a dependency (the ``tarfile`` stream-mode figure in ``benchmarks/stream_bucketing.py``
is what it does internally).

Bad input: a truncated shard or a non-tar file is a :class:`~mcl.errors.DataError` naming the shard;
a member-less key (a ``.txt``/``.json`` without an image), a second image under one key and a key
repeated after other keys are reported (count and first keys, one WARNING per reason) and skipped
(never shifting ids); an unreadable image or a decompression bomb (more pixels than ``max_pixels``,
Pillow's ``Image.MAX_IMAGE_PIXELS`` by default; refused from the header, before any pixel is
decoded) is a one-line ``DataError`` naming shard and key, or with ``on_bad_image='skip'`` skipped
and counted. :func:`shards_fingerprint` identifies the shards from names, sizes and mtimes only.

Example::

    index = index_shards("shards/data-{000000..000099}.tar")
    train = index.ids("train")                     # sample ids of the training split
    images = ShardDataset(index, train, image_size=64)[np.arange(8)]["image"]  # (8, 64, 64, 3) uint8
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from mcl.data.shard_files import (
    IMAGE_EXTENSIONS,
    MAX_TEXT_BYTES,
    TEXT_EXTENSIONS,
    open_shard,
    parse_json,
    read_members,
    resolve_shards,
    shards_fingerprint,
    shown,
    split_member,
)
from mcl.data.table import SPLITS, check_load_options
from mcl.data.table.decode import decode_bytes
from mcl.data.table.strings import StringColumn
from mcl.errors import DataError, one_line
from mcl.files import atomic_open

logger = logging.getLogger("mcl")

__all__ = ["DecodeStats", "ShardDataset", "ShardIndex", "ShardReader", "decode_bytes", "decode_samples",
           "index_shards", "open_shard", "resolve_shards", "shards_fingerprint"]
_EXAMPLES = 5


# ---------------------------------------------------------------------------------------------- index


@dataclass
class ShardIndex:
    """Every sample of a set of shards, by id (shard order, then image member order). No pixels.

    ``shard[i]`` is the position in ``shards`` of sample ``i``'s shard, ``offset[i]``/``size[i]`` where
    its image bytes lie in that shard's (uncompressed) tar stream. ``attributes`` maps each JSON field
    seen to one string per sample (``""`` where a sample lacks it); ``captions`` is None when no sample
    has a ``.txt``. ``keys`` and ``captions`` are :class:`~mcl.data.table.strings.StringColumn` s (bytes,
    no object per sample, shared by forked DataLoader workers). ``skipped`` maps a reason to the
    ``shard#key`` names skipped for it.
    """

    shards: list[Path]
    keys: Sequence[str]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    split: np.ndarray
    attributes: dict[str, list[str]]
    captions: Sequence[str] | None
    fingerprint: str
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def ids(self, split: str | None = None) -> np.ndarray:
        """Sample ids (int64, increasing) of one split, or all of them."""
        if split is None:
            return np.arange(len(self), dtype=np.int64)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def attribute_codes(self, ids: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Attributes of ``ids`` (default all) as an :class:`~mcl.data.table.ImageTable` holds them:
        int64 codes over each attribute's sorted distinct values, and those values."""
        rows = self.ids() if ids is None else np.asarray(ids, dtype=np.int64)
        codes: dict[str, np.ndarray] = {}
        values: dict[str, list[str]] = {}
        for name, column in self.attributes.items():
            distinct, inverse = np.unique(np.asarray(column, dtype=str)[rows], return_inverse=True)
            codes[name], values[name] = inverse.astype(np.int64).reshape(-1), [str(v) for v in distinct]
        return codes, values

    def where(self, sample: int) -> str:
        """``shard-000003.tar#KEY``: how messages name a sample."""
        return f"{self.shards[self.shard[sample]]}#{shown(self.keys[sample])}"

    def save(self, path: str | os.PathLike) -> None:
        """Write the index as one ``.npz`` (no pickles), e.g. rank 0 indexes and the other ranks :meth:`load`."""
        arrays = {"shards": np.asarray([str(p) for p in self.shards]), "keys": np.asarray(self.keys, dtype=str),
                  "shard": self.shard, "offset": self.offset, "size": self.size, "split": self.split.astype(str),
                  "fingerprint": np.asarray(self.fingerprint),
                  "attribute_names": np.asarray(list(self.attributes), dtype=str)}
        arrays.update({f"attribute_{i}": np.asarray(v, dtype=str) for i, v in enumerate(self.attributes.values())})
        if self.captions is not None:
            arrays["captions"] = np.asarray(self.captions, dtype=str)
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, fingerprint: str | None = None) -> ShardIndex | None:
        """An index :meth:`save` wrote; None when absent, unreadable, or its fingerprint is not ``fingerprint``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if fingerprint is not None and str(data["fingerprint"]) != fingerprint:
                    return None
                names = [str(n) for n in data["attribute_names"]]
                return cls(shards=[Path(str(p)) for p in data["shards"]], keys=StringColumn.from_strings(data["keys"]),
                           shard=data["shard"], offset=data["offset"], size=data["size"], split=data["split"],
                           attributes={n: data[f"attribute_{i}"].tolist() for i, n in enumerate(names)},
                           captions=StringColumn.from_strings(data["captions"]) if "captions" in data else None,
                           fingerprint=str(data["fingerprint"]))
        except (OSError, ValueError, KeyError):
            return None


@dataclass
@dataclass
class _ShardSamples:
    """Samples of one shard while indexing: key -> (image offset, size) and its text members."""

    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)
    metas: dict[str, bytes] = field(default_factory=dict)
    keys_seen: dict[str, None] = field(default_factory=dict)


def _index_one(path: Path, skipped: dict[str, list[str]], max_text_bytes: int) -> _ShardSamples:
    found = _ShardSamples()
    last_key: str | None = None
    with open_shard(path) as raw:
        members, odd = read_members(path, raw, TEXT_EXTENSIONS, max_text_bytes)
    for reason, where in odd.items():
        skipped.setdefault(reason, []).extend(where)
    for member in members:
        name = member.name
        base = name.rpartition("/")[2]
        if base.startswith(".") or "." not in base:
            continue
        key, extension = split_member(name)
        if key != last_key and key in found.keys_seen:
            skipped.setdefault("member(s) of a key that appeared earlier in the shard", []).append(
                f"{path.name}#{shown(name)}")
            continue
        found.keys_seen[key] = None
        last_key = key
        if extension in IMAGE_EXTENSIONS:
            if key in found.images:
                skipped.setdefault("extra image(s) under one key", []).append(f"{path.name}#{shown(name)}")
            else:
                found.images[key] = (member.offset, member.size)
        elif member.data is not None:
            (found.texts if extension == "txt" else found.metas)[key] = member.data
    return found


def _parse_meta(path: Path, key: str, data: bytes) -> dict[str, str]:
    meta = parse_json(data, f"{path}#{shown(key)}.json")
    if not isinstance(meta, dict):
        raise DataError(f"{path}#{shown(key)}.json: expected a JSON object, got {type(meta).__name__}")
    split = meta.get("split", "train")
    if split not in SPLITS:
        raise DataError(f"{path}#{shown(key)}.json: 'split' is {split!r}; expected 'train' or 'test'")
    return {name: ("" if value is None else str(value)) for name, value in meta.items()}


def index_shards(source: str | os.PathLike | Iterable[str | os.PathLike],
                 max_text_bytes: int = MAX_TEXT_BYTES) -> ShardIndex:
    """Index WebDataset shards (see the module docstring); logs one line and one WARNING per skip reason.

    ``max_text_bytes``: the largest ``.txt``/``.json`` member read (``data.max_text_bytes``); a larger one
    is a DataError from its header, before it is read.
    """
    shards = resolve_shards(source)
    keys: list[str] = []
    columns: dict[str, list[int]] = {"shard": [], "offset": [], "size": []}
    metas: list[dict[str, str]] = []
    texts: list[str | None] = []
    skipped: dict[str, list[str]] = {}
    for position, path in enumerate(shards):
        found = _index_one(path, skipped, max_text_bytes)
        orphans = [f"{path.name}#{shown(key)}" for key in found.keys_seen if key not in found.images]
        if orphans:
            skipped.setdefault("sample(s) without an image (caption/json only)", []).extend(orphans)
        # Ids follow the image members' order in the shard, which is the order a sequential read meets them.
        for key, (offset, size) in sorted(found.images.items(), key=lambda item: item[1][0]):
            keys.append(key)
            columns["shard"].append(position)
            columns["offset"].append(offset)
            columns["size"].append(size)
            text = found.texts.get(key)
            texts.append(None if text is None else text.decode("utf-8", errors="replace").strip())
            metas.append(_parse_meta(path, key, found.metas[key]) if key in found.metas else {})
    if not keys:
        raise DataError(f"{shards[0]}: no samples with an image ({'/'.join(IMAGE_EXTENSIONS)}) in "
                        f"{len(shards)} shard(s)")
    names = list(dict.fromkeys(name for meta in metas for name in meta if name != "split"))
    for reason, where in skipped.items():
        examples = ", ".join(repr(w) for w in where[:_EXAMPLES])
        logger.warning("%s: skipped %d %s (first: %s)", shards[0].parent, len(where), reason, examples)
    index = ShardIndex(
        shards=shards, keys=StringColumn.from_strings(keys), shard=np.asarray(columns["shard"], dtype=np.int32),
        offset=np.asarray(columns["offset"], dtype=np.int64), size=np.asarray(columns["size"], dtype=np.int64),
        split=np.asarray([meta.get("split", "train") for meta in metas]),
        attributes={name: [meta.get(name, "") for meta in metas] for name in names},
        captions=None if all(t is None for t in texts) else StringColumn.from_strings(t or "" for t in texts),
        fingerprint=shards_fingerprint(shards), skipped=skipped)
    logger.info("%s: indexed %d samples in %d shard(s) (%d train, %d test)", shards[0].parent, len(index),
                len(shards), int((index.split == "train").sum()), int((index.split == "test").sum()))
    return index


# ---------------------------------------------------------------------------------------------- reading


class ShardReader:
    """Reads image bytes of indexed samples; one open shard at a time, forward seeks only per shard.

    Not shared across processes: each DataLoader worker builds its own (it is cheap).
    """

    def __init__(self, index: ShardIndex) -> None:
        self.index = index
        self._open: tuple[int, IO[bytes]] | None = None

    def _handle(self, shard: int, offset: int) -> IO[bytes]:
        if self._open is not None and (self._open[0] != shard or self._open[1].tell() > offset):
            self.close()  # a backward seek in a compressed shard would decompress from the start anyway
        if self._open is None:
            self._open = (shard, open_shard(self.index.shards[shard]))
        return self._open[1]

    def read(self, sample: int) -> bytes:
        """The encoded image bytes of ``sample``; a short read is a DataError naming the shard."""
        index = self.index
        shard, offset, size = int(index.shard[sample]), int(index.offset[sample]), int(index.size[sample])
        handle = self._handle(shard, offset)
        try:
            handle.seek(offset)
            data = handle.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{self.index.shards[shard]}: truncated or corrupt shard ({one_line(exc)})") from None
        if len(data) != size:
            raise DataError(f"{self.index.shards[shard]}: truncated shard (sample {self.index.keys[sample]!r} "
                            f"needs {size} bytes at offset {offset}, got {len(data)})")
        return data

    def read_many(self, samples: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """``(sample, bytes)`` in the order given (sort by id for sequential reads)."""
        for sample in samples:
            yield sample, self.read(sample)

    def close(self) -> None:
        """Close the open shard, if any."""
        if self._open is not None:
            self._open[1].close()
            self._open = None


@dataclass
class DecodeStats:
    """Images skipped as unreadable (``on_bad_image='skip'``) by one process."""

    skipped: list[str] = field(default_factory=list)


def decode_samples(index: ShardIndex, samples: Sequence[int], blobs: Sequence[bytes], image_size: int,
                   on_bad_image: str, stats: DecodeStats | None = None,
                   max_pixels: int | None = None, fit: str = "squash") -> tuple[np.ndarray, np.ndarray]:
    """Decode ``blobs`` of ``samples``; returns ``(readable (n,) bool, images (n, size, size, 3) uint8)``.

    Rows of unreadable images (``on_bad_image='skip'``) are left undefined; with ``'error'`` the first
    one raises a DataError naming shard and key.
    """
    out = np.empty((len(samples), image_size, image_size, 3), dtype=np.uint8)
    keep = np.ones(len(samples), dtype=bool)
    for row, (sample, data) in enumerate(zip(samples, blobs, strict=True)):
        try:
            out[row] = decode_bytes(data, image_size, max_pixels, fit)
        except Exception as exc:  # Pillow raises many unrelated types for corrupt images
            if on_bad_image == "error":
                raise DataError(f"{index.where(int(sample))}: image cannot be read "
                                f"({type(exc).__name__}: {one_line(exc)})") from None
            keep[row] = False
            if stats is not None:
                stats.skipped.append(index.where(int(sample)))
                if len(stats.skipped) <= _EXAMPLES:
                    logger.warning("%s: unreadable image skipped (%s)", index.where(int(sample)), one_line(exc))
    return keep, out


class ShardDataset:
    """Batched map-style access to indexed shards: ``dataset[positions] -> {"index", "image"}``.

    ``ids`` are the sample ids this data set exposes (e.g. ``index.ids("train")``); ``positions`` index
    into them, and ``"index"`` holds those positions, so pseudo-labels of length ``len(ids)`` line up.
    For the random-access samplers (:class:`~mcl.sampling.ClusterBatchSampler` through
    :class:`~mcl.data.loader.DatasetLoader`); reads are sorted by id so each shard is read forward.
    Unreadable images with ``on_bad_image='skip'`` are left out of the batch.
    """

    def __init__(self, index: ShardIndex, ids: np.ndarray, image_size: int, on_bad_image: str = "error",
                 max_pixels: int | None = None, fit: str = "squash") -> None:
        check_load_options(image_size, on_bad_image)
        self.fit = fit
        self.index, self.ids = index, np.asarray(ids, dtype=np.int64)
        self.image_size, self.on_bad_image, self.max_pixels = image_size, on_bad_image, max_pixels
        self.stats = DecodeStats()
        self._reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, positions: Any) -> dict[str, torch.Tensor]:
        positions = np.atleast_1d(np.asarray(positions, dtype=np.int64))
        if self._reader is None:
            self._reader = ShardReader(self.index)
        order = np.argsort(self.ids[positions], kind="stable")
        samples = self.ids[positions[order]]
        blobs = [data for _, data in self._reader.read_many(samples.tolist())]
        keep, images = decode_samples(self.index, samples, blobs, self.image_size, self.on_bad_image, self.stats,
                                      self.max_pixels, self.fit)
        back = np.argsort(order, kind="stable")  # the caller's order again
        back = back[keep[back]]
        return {"index": torch.from_numpy(positions[order][back]), "image": torch.from_numpy(images[back])}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # open files do not cross process boundaries
        return state
