"""Atomic, safe file I/O for run directories.

Every file is written to a temporary sibling, flushed, fsync'ed and renamed over the target, so a
crash (or a full disk) leaves either the old file or the new one, never half of one. A full disk
(``ENOSPC``/``EDQUOT``) becomes a one-line :class:`~mcl.errors.DiskFullError` naming the file. Tensors
are stored with safetensors and metadata as JSON: nothing is ever unpickled. An atomic write whose temporary
file is complete but not yet renamed reaches the fault-injection moment ``write`` (:mod:`mcl.faults`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as _load_numpy
from safetensors.numpy import save as _save_numpy_bytes
from safetensors.torch import load as _load_torch_bytes
from safetensors.torch import save as _save_torch_bytes

from mcl import faults
from mcl.errors import DiskFullError, RunDirError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it; read once, at import
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished files get the usual permissions (0666 less the umask).
_FILE_MODE = 0o666 & ~_read_umask()
FILE_MODE = _FILE_MODE  # for writers that cannot use atomic_open (a memory map needs its path)


def disk_full_error(path: str | os.PathLike, exc: OSError) -> DiskFullError | None:
    """A one-line :class:`DiskFullError` for ``path`` if ``exc`` means the disk or quota is full."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return None
    return DiskFullError(f"{path}: {os.strerror(exc.errno)} while writing; the previous version of the file "
                         "is intact: free some space and re-run the same command to continue")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its old content (or stays absent).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        faults.reached("write")
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and (full := disk_full_error(path, exc)) is not None:
            raise full from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`RunDirError` naming the file if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically (re)write a whole JSON-lines file, e.g. metrics.jsonl up to the last checkpoint."""
    write_bytes(path, "".join(json.dumps(record) + "\n" for record in records).encode())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn (partially written) last line."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically save torch tensors as safetensors."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = _save_torch_bytes(tensors, metadata=metadata)
    write_bytes(path, _sorted_metadata(data, checksum=True) if metadata else data)


# A file saved with metadata (checkpoints, aligned towers) records the sha256 of its tensor bytes, checked on
# every load: a flipped bit in a file no manifest covers (the running stage's checkpoint) is refused by name.
DATA_SHA256 = "mcl.data_sha256"


def _sorted_metadata(data: bytes, checksum: bool = False) -> bytes:
    """safetensors bytes with the ``__metadata__`` keys in sorted order (the library writes them in hash-map
    order, which differs between processes, so identical runs would give files with other checksums), and
    with ``checksum`` the :data:`DATA_SHA256` of the tensor bytes added."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    if checksum:
        header["__metadata__"][DATA_SHA256] = hashlib.sha256(data[8 + length:]).hexdigest()
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as the library writes it
    return len(text).to_bytes(8, "little") + text + data[8 + length:]


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file of torch tensors (safe: no code can run)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        tensors = _load_torch_bytes(data)
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise RunDirError(f"{path}: not a valid safetensors file ({exc})") from None
    _check_data_sha256(path, data)
    return tensors


def _check_data_sha256(path: Path, data: bytes) -> dict[str, str]:
    """The file's metadata less :data:`DATA_SHA256`, after checking that checksum where one was recorded."""
    length = int.from_bytes(data[:8], "little")
    metadata = dict(json.loads(data[8:8 + length]).get("__metadata__") or {})
    recorded = metadata.pop(DATA_SHA256, None)
    if recorded is not None and hashlib.sha256(data[8 + length:]).hexdigest() != recorded:
        raise RunDirError(f"{path}: its tensor bytes differ from the checksum recorded in it (a damaged file); "
                          "delete it to recompute it")
    return metadata


def load_tensors_with_metadata(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file of torch tensors and its string metadata."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise RunDirError(f"{path}: not a valid safetensors file ({exc})") from None
    return tensors, _check_data_sha256(path, path.read_bytes())


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Atomically save numpy arrays as safetensors."""
    write_bytes(path, _save_numpy_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a safetensors file of numpy arrays."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: file not found")
    try:
        return _load_numpy(str(path))
    except Exception as exc:
        raise RunDirError(f"{path}: not a valid safetensors file ({exc})") from None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content (manifest checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
