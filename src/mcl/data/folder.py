"""The ImageFolder layout: ``DIR/<class>/<image>``, optionally split as ``DIR/train/<class>/...`` and ``DIR/test/...``.

Used for a directory without ``labels.csv``. Every image file (torchvision's ImageFolder extensions,
any case) below a class folder, at any depth, is one sample; the class folder's name becomes the
attribute ``class``, coded like a ``labels.csv`` attribute column (int64 codes over the sorted
names). Without split folders every sample is ``train``. Rows are sorted by relative path, so sample
ids are stable across machines and file systems. Hidden files and folders (such as the decode cache
``.mcl_cache``) are ignored; an image lying directly in ``DIR`` (or ``DIR/train``), and a mix of split
and class folders, are errors. Symlinks are followed (each real folder once, so a loop ends), but
every folder and image must resolve inside ``DIR`` unless ``allow_outside_paths``. Decoding, the
cache and ``on_bad_image`` are those of :func:`~mcl.data.table.load_table`.

Example: ``pets/train/cat/1.png``, ``pets/train/dog/2.jpg``, ``pets/test/cat/3.png`` give paths
``['test/cat/3.png', 'train/cat/1.png', 'train/dog/2.jpg']``, split ``[test, train, train]``, attribute
``class`` codes ``[0, 0, 1]`` with values ``['cat', 'dog']``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mcl.data.table import LABELS_FILE, SPLITS, ImageTable, Rows, check_load_options, load_rows
from mcl.errors import DataError

CLASS_ATTRIBUTE = "class"
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
_EXPECTED = "expected DIR/<class>/<image> (optionally DIR/train/<class>/<image> and DIR/test/<class>/<image>)"


def load_folder(
    directory: str | os.PathLike,
    image_size: int,
    on_bad_image: str = "error",
    cache: bool = True,
    progress: bool = True,
    *,
    allow_outside_paths: bool = False,
    stream: bool = False,
) -> ImageTable:
    """Load an ImageFolder directory as an :class:`ImageTable` with one attribute, ``class``.

    ``stream``: decode nothing now (see :func:`mcl.data.table.load_table`).
    """
    check_load_options(image_size, on_bad_image)
    root = Path(directory)
    rows = read_folder(root, allow_outside_paths=allow_outside_paths)
    return load_rows(root, rows, image_size, on_bad_image, cache, progress, allow_outside_paths, stream=stream)


def read_folder(root: Path, *, allow_outside_paths: bool = False) -> Rows:
    """List the samples of an ImageFolder directory (sorted relative paths, split, class name)."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    try:
        return _read_folder(root, allow_outside_paths)
    except OSError as exc:  # an unreadable sub-folder must not silently drop its images
        raise DataError(f"{root}: cannot list {exc.filename} ({exc.strerror})") from None


def _read_folder(root: Path, allow_outside_paths: bool) -> Rows:
    top = _subfolders(root)
    splits = [name for name in top if name in SPLITS]
    if splits and len(splits) < len(top):
        others = ", ".join(name for name in top if name not in SPLITS)
        raise DataError(
            f"{root}: mixes split folders ({', '.join(splits)}) with other folders ({others}); only 'train' and "
            f"'test' are split folders; {_EXPECTED}"
        )
    visited: set[str] = set()
    entries: list[tuple[str, str, str]] = []  # (relative path, split, class)
    _check_no_loose_images(root, root)
    for split in splits or [""]:
        base = root / split if split else root
        if split:
            _check_no_loose_images(root, base)
        for name in _subfolders(base):
            folder = f"{split}/{name}" if split else name
            for path in _images_below(root, folder, visited, allow_outside_paths):
                entries.append((path, split or "train", name))
    if not entries:
        table = "" if (root / LABELS_FILE).exists() else "no labels.csv and "
        raise DataError(f"{root}: {table}no images in class folders; {_EXPECTED}")
    entries.sort()
    listing = "".join(f"{path}\0{split}\0{name}\n" for path, split, name in entries)
    return Rows(
        origin=root,
        digest=hashlib.sha256(listing.encode()).hexdigest(),
        paths=[path for path, _, _ in entries],
        split=[split for _, split, _ in entries],
        captions=None,
        attributes={CLASS_ATTRIBUTE: [name for _, _, name in entries]},
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if not entry.name.startswith(".") and entry.is_dir())


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _check_no_loose_images(root: Path, folder: Path) -> None:
    loose = sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and _is_image(entry.name))
    if loose:
        shown = folder.relative_to(root) / loose[0]
        raise DataError(f"{root}: image {shown.as_posix()!r} is not inside a class folder; {_EXPECTED}")


def _raise(exc: OSError) -> None:
    raise exc


def _images_below(root: Path, folder: str, visited: set[str], allow_outside_paths: bool) -> list[str]:
    """Image paths (relative to ``root``, posix) at any depth below ``root/folder``, in sorted walk order."""
    found: list[str] = []
    base = os.path.realpath(root)
    for current, dirs, files in os.walk(root / folder, onerror=_raise, followlinks=True):
        real = os.path.realpath(current)
        relative = Path(current).relative_to(root).as_posix()
        if not allow_outside_paths and os.path.commonpath([base, real]) != base:
            raise DataError(
                f"{root}: folder {relative!r} resolves to {real}, outside {base}; keep images inside the "
                "directory or load with allow_outside_paths=True (config key data.allow_outside_paths)"
            )
        if real in visited:
            dirs.clear()  # reached again through a symlink: its images are listed already
            continue
        visited.add(real)
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        found.extend(f"{relative}/{name}" for name in sorted(files) if _is_image(name))
    return found
