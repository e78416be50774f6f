"""Atomic writes, full disks, safe tensor loading and the crash hook of ``mcl.files``."""

import errno
import io
import os
import pickle
import stat

import pytest
import torch

from mcl.errors import DiskFullError, RunDirError
from mcl.files import (
    atomic_open,
    load_tensors,
    load_tensors_with_metadata,
    read_jsonl,
    save_tensors,
    write_bytes,
    write_json,
    write_jsonl,
)


class _FullDisk(io.RawIOBase):
    """A file whose writes store half of the data and then fail with ENOSPC, like a full disk."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(bytes(data[: len(data) // 2]))
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self):
        return self.handle.fileno()

    def close(self):
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r": _FullDisk(real_fdopen(fd, mode)))


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert target.read_text().strip().endswith("}") and '"x": 2' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_written_files_get_the_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    write_bytes(tmp_path / "f", b"x")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~mask


def test_full_disk_keeps_the_old_file_and_names_it(tmp_path, full_disk):
    target = tmp_path / "manifest.json"
    target.write_text("old content\n")
    with pytest.raises(DiskFullError) as info:
        write_bytes(target, b"new content that does not fit\n" * 100)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # the half-written temp is gone
    message = str(info.value)
    assert message.startswith(str(target)) and "No space left on device" in message and "\n" not in message


def test_other_write_errors_propagate_and_clean_up(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_open(target, "wb") as handle:
        handle.write(b"partial")
        raise ValueError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_jsonl_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"epoch": 1}, {"epoch": 2}])
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    with open(path, "a") as handle:
        handle.write('{"epoch": 3, "lo')  # a crash in the middle of an append
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    planted = tmp_path / "checkpoint.safetensors"
    planted.write_bytes(pickle.dumps({"model": _Exploit(marker)}))
    with pytest.raises(RunDirError, match="not a valid safetensors file"):
        load_tensors(planted)
    with pytest.raises(RunDirError, match="not a valid safetensors file"):
        load_tensors_with_metadata(planted)
    assert not marker.exists()


def test_truncated_safetensors_is_a_run_dir_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"w": torch.arange(100.0)}, metadata={"k": "v"})
    assert torch.equal(load_tensors(path)["w"], torch.arange(100.0))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(RunDirError, match=str(path)):
        load_tensors(path)
