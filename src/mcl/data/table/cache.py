"""The decode cache: ``<root>/.mcl_cache/images_<size>.npy`` (memory-mapped) plus ``images_<size>.json``.

The JSON holds a key (cache version, image size, row count, digest of the source listing, and a hash
of every image's size and mtime), the unreadable rows and the original-size summary. Any change to
the source or an image changes the key, and the images are decoded again. Decoding goes straight
into a preallocated temp memory map that is renamed into place, so memory stays flat for big tables;
where the directory is not writable, images are decoded into RAM and nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

import mcl.data.table.decode as decode
from mcl.data.table.core import CACHE_DIR, Rows
from mcl.data.table.decode import BadImage, ImageSizes
from mcl.files import FILE_MODE, atomic_open, write_json

logger = logging.getLogger("mcl")

# Bump when decoding changes (resampling, colour conversion) so that old caches are not reused.
_CACHE_VERSION = 2  # 2: 32-bit integer and float grey images rescaled instead of clipped


def cache_files(root: Path, size: int) -> tuple[Path, Path]:
    """The ``.npy`` array and ``.json`` metadata of the cache for ``size``."""
    cache = root / CACHE_DIR
    return cache / f"images_{size}.npy", cache / f"images_{size}.json"


def cache_key(root: Path, rows: Rows, size: int) -> dict[str, object]:
    """What a valid cache must have been built from."""
    files = hashlib.sha256()
    for path in rows.paths:
        try:
            stat = (root / path).stat()
            files.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            files.update(f"{path}\0missing\n".encode())
    return {
        "version": _CACHE_VERSION,
        "image_size": size,
        "rows": len(rows.paths),
        "labels_sha256": rows.digest,
        "files_sha256": files.hexdigest(),
    }


def _read_cache(
    root: Path, size: int, key: dict[str, object]
) -> tuple[np.ndarray, list[BadImage], ImageSizes | None] | None:
    npy, meta = cache_files(root, size)
    try:
        stored = json.loads(meta.read_text())
        if stored.get("key") != key:
            return None
        bad = [BadImage(**entry) for entry in stored["bad"]]
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a missing or damaged cache is simply rebuilt
    if images.dtype != np.uint8 or images.shape != (int(key["rows"]) - len(bad), size, size, 3):
        return None
    return images, bad, ImageSizes.from_json(stored.get("sizes"))


def write_cache_meta(meta: Path, key: dict[str, object], bad: list[BadImage], sizes: ImageSizes | None) -> None:
    """Write the cache's JSON (last, so that a cache without it is never trusted)."""
    write_json(meta, {"key": key, "bad": [asdict(entry) for entry in bad],
                      "sizes": None if sizes is None else asdict(sizes)})


def _temp_memmap(target: Path, shape: tuple[int, ...]) -> tuple[np.memmap, Path] | None:
    """A uint8 .npy memory map on a temp file next to ``target``; None where that is not writable.

    Decoding straight into it keeps memory flat for big tables. ``io.atomic_open`` cannot be used
    because a memory map needs a path, so this does the same temp-then-rename by hand.
    """
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(name)
        _HELD[tmp] = fd
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would make the renamed cache unreadable to others
        _lock(fd)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            # A sparse file would raise SIGBUS (not an exception) on a full disk while decoding.
            with open(tmp, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.path.getsize(tmp))
        return array, tmp
    except OSError:
        if tmp is not None:
            _discard(tmp)
        return None


# A temp cache file is flock-ed by the process decoding into it, so a later process can tell a file a
# killed process left (unlocked: removed) from one another process is still writing (locked: left alone).
_HELD: dict[Path, int] = {}


def _lock(fd: int, blocking: bool = True) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: stale temporaries are not recognised, only ever left behind
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _discard(tmp: Path, unlink: bool = True) -> None:
    """Remove (with ``unlink``) a temp cache file this process made and release its lock."""
    if unlink:
        tmp.unlink(missing_ok=True)
    fd = _HELD.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def _remove_stale_temporaries(target: Path) -> None:
    """Delete ``.<target>.*.tmp`` files no live process holds (left by a run killed mid-decode)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                logger.info("removing %s, left by an interrupted decode", stale)
                stale.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _commit_cache(
    images: np.memmap, tmp: Path, root: Path, size: int, key: dict[str, object], bad: list[BadImage],
    sizes: ImageSizes | None,
) -> np.ndarray:
    """Move a fully decoded temp memory map into the cache and return the cached array, memory-mapped."""
    npy, meta = cache_files(root, size)
    try:
        images.flush()
        if bad:
            with atomic_open(npy) as handle:  # bad images are rare: compacting in RAM is fine
                np.save(handle, drop_rows(images, bad))
            _discard(tmp)
        else:
            os.replace(tmp, npy)
            _discard(tmp, unlink=False)
        write_cache_meta(meta, key, bad, sizes)
        return np.load(npy, mmap_mode="r")
    except OSError as exc:
        logger.debug("%s: image cache not written (%s)", root, exc)
        kept = drop_rows(images, bad)
        _discard(tmp)
        return kept


def drop_rows(images: np.ndarray, bad: list[BadImage]) -> np.ndarray:
    """``images`` without the rows of ``bad``."""
    if not bad:
        return images
    return np.delete(images, [entry.row for entry in bad], axis=0)


def load_images(
    root: Path, rows: Rows, size: int, cache: bool, progress: bool, fail_fast: bool
) -> tuple[np.ndarray, list[BadImage], ImageSizes | None]:
    """Decoded images of the readable rows, the unreadable rows, and the original sizes (from the cache
    when valid; with ``fail_fast`` the images are incomplete whenever a row is bad)."""
    key = cache_key(root, rows, size) if cache else {}
    if cache and (hit := _read_cache(root, size, key)) is not None:
        return hit
    shape = (len(rows.paths), size, size, 3)
    temp = _temp_memmap(cache_files(root, size)[0], shape) if cache else None
    if temp is None:
        images = np.empty(shape, dtype=np.uint8)
        bad, sizes = decode.decode_all(root, rows, size, images, progress, fail_fast)
        return drop_rows(images, bad), bad, sizes
    images, tmp = temp
    try:
        bad, sizes = decode.decode_all(root, rows, size, images, progress, fail_fast)
    except BaseException:
        _discard(tmp)
        raise
    if bad and fail_fast:
        _discard(tmp)
        return images, bad, sizes  # the caller raises; nothing is cached
    return _commit_cache(images, tmp, root, size, key, bad, sizes), bad, sizes
