"""The files a data source is made of, and a fingerprint of them that notices any change.

One rule for every source: the fingerprint lists each file the source reads (an image table:
``labels.csv`` and every image it names; an image folder: every image; WebDataset: every shard) with
its size and modification time (``stat``, cheap: one ``stat`` per file, no reading), or, with
``data.fingerprint: content``, also the sha256 of its bytes (reads everything once per start).
A run records the digest in its manifest and the listing beside it (``RUN_DIR/data_files.npz``), so
resuming on changed data is refused with a message naming the first changed file.

Example::

    files = source_files("data/", how="stat")
    files.digest()                              # 'a3f1...' (hex)
    files.first_change(DataFiles.load(path))    # 'images/000000.png (size 301 -> 288)' or None
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcl.errors import DataError
from mcl.files import atomic_open

FINGERPRINTS = ("stat", "content")


@dataclass
class DataFiles:
    """Names (relative to the source, as its listing names them), sizes, mtimes (ns) and optional sha256s."""

    names: list[str]
    sizes: np.ndarray
    mtimes: np.ndarray
    hashes: list[str] | None = None

    def digest(self, content: bool = False) -> str:
        """sha256 (hex) of the listing: names, sizes, mtimes (with ``content``, the files' sha256s instead)."""
        if content and self.hashes is None:
            raise ValueError("no content hashes were taken (how='content')")
        digest = hashlib.sha256()
        for i, name in enumerate(self.names):
            extra = f"\0{self.hashes[i]}" if content and self.hashes is not None else ""
            digest.update(f"{name}\0{int(self.sizes[i])}\0{int(self.mtimes[i])}{extra}\n".encode("utf-8",
                                                                                                  "surrogateescape"))
        return digest.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the listing as one ``.npz`` (no pickles), atomically."""
        arrays = {"names": np.asarray(self.names, dtype=str), "sizes": self.sizes, "mtimes": self.mtimes}
        if self.hashes is not None:
            arrays["hashes"] = np.asarray(self.hashes, dtype=str)
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataFiles | None:
        """A listing :meth:`save` wrote; None when absent or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as data:
                hashes = data["hashes"].tolist() if "hashes" in data else None
                return cls(data["names"].tolist(), data["sizes"], data["mtimes"], hashes)
        except (OSError, ValueError, KeyError):
            return None

    def fingerprint(self) -> dict[str, str]:
        """What a run's manifest records: the stat digest, and the content digest when hashes were taken."""
        out = {"files_sha256": self.digest()[:16]}
        if self.hashes is not None:
            out["content_sha256"] = self.digest(content=True)[:16]
        return out

    def changed_since(self, path: str | os.PathLike) -> str | None:
        """:meth:`first_change` against the listing saved at ``path`` (None when there is none)."""
        return self.first_change(DataFiles.load(path))

    def first_change(self, before: DataFiles | None) -> str | None:
        """``name (what changed)`` of the first file that differs from ``before``; None when none does."""
        if before is None:
            return None
        old = {name: i for i, name in enumerate(before.names)}
        for i, name in enumerate(self.names):
            j = old.pop(name, None)
            if j is None:
                return f"{name} (new)"
            if int(self.sizes[i]) != int(before.sizes[j]):
                return f"{name} (size {int(before.sizes[j])} -> {int(self.sizes[i])})"
            if int(self.mtimes[i]) != int(before.mtimes[j]):
                return f"{name} (modified)"
            if self.hashes is not None and before.hashes is not None and self.hashes[i] != before.hashes[j]:
                return f"{name} (content differs)"
        return f"{next(iter(old))} (removed)" if old else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing(root: Path, names: list[str], how: str = "stat") -> DataFiles:
    """Stat (and with ``how='content'`` hash) ``root/name`` for every name; a file that is gone counts as size -1."""
    if how not in FINGERPRINTS:
        raise DataError(f"data.fingerprint: {how!r}; expected one of {', '.join(FINGERPRINTS)}")
    sizes = np.full(len(names), -1, dtype=np.int64)
    mtimes = np.zeros(len(names), dtype=np.int64)
    hashes: list[str] | None = [] if how == "content" else None
    for i, name in enumerate(names):
        path = root / name
        try:
            info = os.stat(path)
        except OSError:
            if hashes is not None:
                hashes.append("")
            continue
        sizes[i], mtimes[i] = info.st_size, info.st_mtime_ns
        if hashes is not None:
            hashes.append(_sha256(path) if os.path.isfile(path) else "")
    return DataFiles(list(names), sizes, mtimes, hashes)


def source_files(path: str | os.PathLike, how: str = "stat") -> DataFiles:
    """Every file the source at ``path`` reads (see the module docstring), with sizes and mtimes."""
    from mcl.data.sources import source_kind

    root = Path(path)
    kind = source_kind(root)
    if kind == "webdataset":
        from mcl.data.shard_files import resolve_shards

        shards = resolve_shards(path)
        return listing(Path("/"), [str(Path(s).resolve()) for s in shards], how)
    if kind == "table":
        from mcl.data.table import LABELS_FILE
        from mcl.data.table.labels import read_labels

        return listing(root, [LABELS_FILE, *read_labels(root).paths], how)
    from mcl.data.folder import read_folder

    return listing(root, list(read_folder(root, allow_outside_paths=True).paths), how)
