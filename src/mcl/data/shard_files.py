"""WebDataset shard files: which files, how to open them, and the one tar member reader, with size limits.

Every reader of ``.tar`` shards in mcl (:mod:`mcl.data.webdataset`'s index, :mod:`mcl.data.image_text`'s
import) lists members with :func:`read_members`: one sequential pass over the 512-byte headers (a fast
ustar parser, :mod:`tarfile` for pax/GNU headers), reading only the small text members (``.txt``,
``.json`` and any other non-image extension asked for) and recording where every other member's bytes
lie (``offset``, ``size`` in the uncompressed tar stream), so image bytes are read later by a seek.

Hostile input is refused from the header, before any byte of a member is read:

- a text member larger than ``max_text_bytes`` (``data.max_text_bytes``, default :data:`MAX_TEXT_BYTES`)
  is a one-line :class:`~mcl.errors.DataError` naming the shard, member and the key to raise;
- a member size beyond the shard itself (e.g. a forged base-256 size of 2^62) is a DataError;
- hard links are resolved to the earlier member they name (GNU tar writes one for a duplicate file);
  symbolic links, FIFOs, devices and other non-regular members are skipped and counted by reason;
- a shard that is not a regular file (a FIFO, a device) is refused by type before it is opened.

:func:`parse_json` parses a ``.json`` sidecar with a nesting limit (:data:`MAX_JSON_DEPTH`).

Example::

    shards = resolve_shards("shards/data-{000000..000009}.tar")
    with open_shard(shards[0]) as raw:
        members, skipped = read_members(shards[0], raw, text_extensions=("txt", "json"))
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mcl.errors import DataError, one_line

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTENSIONS = ("txt", "json")
MAX_TEXT_BYTES = 1 << 20  # 1 MiB: far above any caption or metadata record, far below a decompression bomb
MAX_JSON_DEPTH = 32
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_MAX_EXPANDED = 1_000_000  # shard paths one brace pattern may name
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_TAR_END = 1024  # two zero blocks close every well-formed tar archive
_REGULAR, _HARDLINK, _SYMLINK, _DIRECTORY = (b"0", b"\0", b"7"), b"1", b"2", b"5"


class ShardFormatError(DataError):
    """A shard that is cut short or is not a tar archive; ``reason`` says what the reader met."""

    def __init__(self, shard: Path, reason: str) -> None:
        super().__init__(f"{shard}: truncated or not a tar shard ({reason})")
        self.reason = reason


# ---------------------------------------------------------------------------------------------- files


def expand_shards(shards: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Shard paths from a list or a brace pattern (``data-{000..009}.tar``, zero padding kept)."""
    if not isinstance(shards, str | os.PathLike):
        return [Path(s) for s in shards]
    spec = os.fspath(shards)
    match = _BRACES.search(spec)
    if match is None:
        return [Path(spec)]
    first, last = match.groups()
    if int(last) - int(first) >= _MAX_EXPANDED:
        raise DataError(f"{spec}: the brace pattern names more than {_MAX_EXPANDED} shards")
    width = len(first)
    prefix, suffix = spec[: match.start()], spec[match.end():]
    return [path for n in range(int(first), int(last) + 1)
            for path in expand_shards(f"{prefix}{n:0{width}d}{suffix}")]


def resolve_shards(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Shard paths of a directory (its ``*.tar*`` files, sorted), a brace pattern, one file or a list."""
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        shards = sorted(p for p in Path(source).iterdir() if ".tar" in p.name and not p.name.startswith("."))
        if not shards:
            raise DataError(f"{source}: no .tar shards in this directory")
        return shards
    shards = expand_shards(source)
    if not shards:
        raise DataError("no WebDataset shards given")
    return shards


def shards_fingerprint(shards: Sequence[str | os.PathLike]) -> str:
    """sha256 (hex) of every shard's name, size and mtime: detects changed data without reading it."""
    digest = hashlib.sha256()
    for shard in shards:
        try:
            info = os.stat(shard)
        except OSError as exc:
            raise DataError(f"{shard}: WebDataset shard cannot be read ({exc.strerror})") from None
        digest.update(f"{Path(shard).name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_regular(path: str | os.PathLike, what: str) -> os.stat_result:
    """``os.stat(path)`` if ``path`` is a regular file; else a DataError (a FIFO or device would block or never end)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: {what} is not a regular file (a directory, FIFO or device); expected a file")
    return info


def open_shard(path: Path) -> IO[bytes]:
    """The shard's uncompressed tar stream (gzip, bzip2 and xz detected by their magic bytes)."""
    check_regular(path, "WebDataset shard")
    try:
        with open(path, "rb") as probe:
            magic = probe.read(6)
    except OSError as exc:
        raise DataError(f"{path}: WebDataset shard cannot be read ({exc.strerror})") from None
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ"):
        return lzma.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def shown(name: str) -> str:
    """A member name or key as messages print it: as is, or escaped when it holds line breaks or other
    unprintable characters (a message is always one line)."""
    return name if name.isprintable() else repr(name)[1:-1]


def split_member(name: str) -> tuple[str, str]:
    """WebDataset key and extension: ``dir/000001.seg.jpg`` -> (``dir/000001``, ``seg.jpg``)."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


# ---------------------------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """A regular file member: its name, where its bytes lie in the tar stream, and them if it is a text member."""

    name: str
    offset: int
    size: int
    data: bytes | None


class _NotPlainUstar(Exception):
    """A header the fast reader leaves to :mod:`tarfile` (pax/GNU long names, base-256 sizes)."""


@dataclass
class _Reader:
    """State of one pass: the limits, the members found, the regular files by name (hard-link targets)."""

    shard: Path
    raw: IO[bytes]
    text_extensions: tuple[str, ...]
    max_text_bytes: int
    limit: int | None  # bytes an uncompressed shard holds; None when compressed (unknown until read)
    members: list[Member]
    skipped: dict[str, list[str]]
    by_name: dict[str, Member]

    def add(self, name: str, kind: bytes, offset: int, size: int, linkname: str, read: Any) -> None:
        """Record one member from its header; ``read()`` reads its data (called only for a wanted text member)."""
        where = f"{self.shard.name}#{shown(name)}"
        if self.limit is not None and offset + size > self.limit:
            raise DataError(f"{self.shard}: member {shown(name)!r} claims {size} bytes at offset {offset}, beyond the "
                            f"shard's {self.limit} bytes (corrupt or forged tar header)")
        if kind == _HARDLINK:
            target = self.by_name.get(linkname)
            if target is None:
                self.skipped.setdefault("hard link(s) to no earlier member", []).append(where)
                return
            self.skipped.setdefault("hard link(s) resolved to the member they name (kept)", []).append(where)
            member = Member(name, target.offset, target.size, target.data if self._wanted(name) else None)
        elif kind == _SYMLINK:
            self.skipped.setdefault("symbolic link member(s) (not followed)", []).append(where)
            return
        elif kind == _DIRECTORY:
            return
        elif kind not in _REGULAR:
            self.skipped.setdefault("device, FIFO or other non-regular member(s)", []).append(where)
            return
        else:
            data = None
            if self._wanted(name):
                if size > self.max_text_bytes:
                    raise DataError(f"{self.shard}#{shown(name)}: {size} bytes, more than data.max_text_bytes "
                                    f"({self.max_text_bytes}) for a text member; raise data.max_text_bytes if "
                                    "the file is genuine")
                data = read()
                if len(data) != size:
                    raise tarfile.ReadError("unexpected end of data")
            member = Member(name, offset, size, data)
        self.by_name[name] = member
        self.members.append(member)

    def _wanted(self, name: str) -> bool:
        return split_member(name)[1] in self.text_extensions


def _ustar(reader: _Reader) -> int:
    """Members of a plain ustar/v7 archive from its 512-byte headers (several times faster than tarfile)."""
    raw, position = reader.raw, 0
    while True:
        raw.seek(position)
        block = raw.read(_BLOCK)
        if not block:
            raise tarfile.ReadError(f"no end-of-archive marker after byte {position}")
        if len(block) < _BLOCK:
            raise tarfile.ReadError(f"unexpected end of data at byte {position}")
        if block == _ZERO_BLOCK:
            return position
        stored = block[148:156].strip(b"\0 ")
        try:
            valid = bool(stored) and int(stored, 8) == sum(block) - sum(block[148:156]) + 8 * 32
        except ValueError:
            valid = False
        if not valid:
            raise tarfile.ReadError(f"bad header checksum at byte {position}")
        kind = block[156:157]
        if kind in (b"x", b"g", b"L", b"K") or block[124] & 0x80:
            raise _NotPlainUstar
        try:
            size = int(block[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            raise tarfile.ReadError(f"bad member size at byte {position}") from None
        name = block[:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0]
            name = prefix + b"/" + name if prefix else name
        linkname = block[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        reader.add(name.decode("utf-8", "surrogateescape"), kind, position + _BLOCK, size, linkname,
                   lambda size=size: raw.read(size))
        if kind in (_HARDLINK, _SYMLINK):
            size = 0  # links carry no data whatever their size field says
        position += _BLOCK + -(-size // _BLOCK) * _BLOCK


def _tarfile(reader: _Reader) -> int:
    end = 0
    with tarfile.open(fileobj=reader.raw, mode="r:") as tar:
        for info in tar:
            kind = info.type if info.type in (_HARDLINK, _SYMLINK, _DIRECTORY) or not info.isreg() else b"0"
            size = 0 if kind in (_HARDLINK, _SYMLINK) else info.size
            reader.add(info.name, kind, info.offset_data, size, info.linkname,
                       lambda info=info: (tar.extractfile(info) or _Empty()).read())
            end = info.offset_data + -(-size // _BLOCK) * _BLOCK
    return end


class _Empty:
    def read(self) -> bytes:
        return b""


def read_members(shard: Path, raw: IO[bytes], text_extensions: Sequence[str] = TEXT_EXTENSIONS,
                 max_text_bytes: int = MAX_TEXT_BYTES) -> tuple[list[Member], dict[str, list[str]]]:
    """Every regular-file member of the open shard ``raw`` (see the module docstring) and what was skipped.

    Text members (extensions in ``text_extensions``) carry their bytes; others only offset and size.
    A truncated or garbled shard is a one-line DataError naming it.
    """
    # An uncompressed shard's size bounds every member; a compressed one's is known only once read through.
    limit = os.fstat(raw.fileno()).st_size if isinstance(raw, io.BufferedReader | io.FileIO) else None
    reader = _Reader(shard, raw, tuple(text_extensions), max_text_bytes, limit, [], {}, {})
    try:
        try:
            end = _ustar(reader)
        except _NotPlainUstar:
            raw.seek(0)
            reader.members.clear()
            reader.skipped.clear()
            reader.by_name.clear()
            end = _tarfile(reader)
        # tarfile stops quietly at a cut or garbled header; a complete archive ends in two zero blocks.
        raw.seek(end)
        if raw.read(_TAR_END) != bytes(_TAR_END):
            raise tarfile.ReadError(f"no end-of-archive marker after byte {end}")
    except (tarfile.TarError, OSError, EOFError, ValueError, OverflowError, zlib.error, lzma.LZMAError) as exc:
        raise ShardFormatError(shard, one_line(exc) or type(exc).__name__) from None
    except MemoryError:
        raise DataError(f"{shard}: a tar header claims an impossible member size (corrupt or forged)") from None
    return reader.members, reader.skipped


# ---------------------------------------------------------------------------------------------- JSON


def parse_json(data: bytes, where: str) -> Any:
    """A ``.json`` member's value; invalid UTF-8/JSON or nesting deeper than :data:`MAX_JSON_DEPTH` is a DataError."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({one_line(exc)})") from None
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise DataError(f"{where}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion (a scalar is 0, ``[]`` is 1)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest
