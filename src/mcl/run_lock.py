"""The run directory's writer lock and the check that ``--out`` is a run directory (or empty).

Algorithm: a writer (``mcl train``, ``--resume``) takes an exclusive, non-blocking advisory lock
(:func:`fcntl.flock`) on ``RUN_DIR/.lock`` and holds it while it writes; the kernel releases it when
the process ends, however it ends (SIGKILL, power cut of the process), so a stale lock never blocks
the next writer. The holder writes ``pid host`` into the file so that a refused writer can say who
holds it. Readers (``mcl eval``, ``report``, ``embed``) take no lock: every run file is written
atomically, so they see either the old or the new file.

The lock is re-entrant within one process (a second :func:`writer_lock` on the same directory reuses
the held descriptor), since ``flock`` locks belong to an open file description and a process
opening the file twice would otherwise lock itself out.

Example::

    with writer_lock(Path("runs/demo")):
        ...  # train; a second 'mcl train --out runs/demo' now fails at once, naming this PID and host
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mcl.errors import RunDirError
from mcl.tracking import RUN_DIR_ENTRIES

LOCK_FILE = ".lock"
# Entries a directory may hold before its manifest exists and still count as an mcl run in the making:
# the generated/imported data set, this lock, the trackers' files (--log opens them before training starts:
# mcl.tracking), the data listing (written just before the manifest).
_PRE_RUN_ENTRIES = frozenset({"data", LOCK_FILE, *RUN_DIR_ENTRIES, "data_files.npz"})
_HELD: dict[str, tuple[int, int]] = {}  # resolved directory -> (descriptor, nesting depth)


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:200].split()
    except OSError:
        text = []
    return f"process {text[0]} on host {text[1]}" if len(text) >= 2 else "another process"


@contextlib.contextmanager
def writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive writer lock of ``run_dir`` meanwhile; a RunDirError at once if another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, the run goes ahead unlocked
        yield
        return
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot open the run directory's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(f"{path}: cannot lock the run directory ({exc.strerror})") from None
        raise RunDirError(f"{run_dir}: in use by {_holder(path)} (lock {path}); wait for it to finish, "
                          "or choose another --out directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _HELD.pop(key)
        os.close(fd)  # releases the lock


def check_out_dir(run_dir: Path, manifest: str, config_file: str) -> None:
    """Refuse ``run_dir`` unless it is missing, empty, an mcl run (has ``manifest``), or only holds what a
    starting run writes first; a ``config_file`` there without a manifest is the user's, never overwritten."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: --out names a file, not a directory; choose a directory for the run")
    if (run_dir / manifest).exists():
        return
    entries = sorted(entry.name for entry in run_dir.iterdir())
    if config_file in entries:
        raise RunDirError(f"{run_dir}: holds a {config_file} but no {manifest}, so it is not an mcl run; choose "
                          "an empty or new --out directory (mcl would overwrite that file)")
    foreign = [name for name in entries if name not in _PRE_RUN_ENTRIES and not name.endswith(".tmp")]
    if foreign:
        raise RunDirError(f"{run_dir}: not empty and not an mcl run (holds {foreign[0]!r}"
                          f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); choose an empty or "
                          "new --out directory")
