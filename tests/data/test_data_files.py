"""A data source's files and their fingerprint: one rule (size + mtime, optional sha256) for every source."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.shards import write_tar
from mcl.data.data_files import DataFiles, source_files
from mcl.data.table import write_table
from mcl.errors import DataError


@pytest.fixture
def table(tmp_path: Path) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    return write_table(tmp_path / "t", images, {"a": list("abab")}, ["train"] * 4)


def test_table_listing_catches_a_changed_image(table: Path, tmp_path: Path) -> None:
    before = source_files(table)
    assert before.names[0] == "labels.csv" and len(before.names) == 5
    before.save(tmp_path / "files.npz")
    assert source_files(table).digest() == before.digest()
    shutil.copy(table / before.names[2], table / before.names[1])  # cp 000001.png 000000.png
    after = source_files(table)
    assert after.digest() != before.digest()
    assert after.changed_since(tmp_path / "files.npz").startswith(before.names[1])


def test_content_hash_catches_a_same_size_same_mtime_edit(table: Path) -> None:
    before = source_files(table, "content")
    name = table / before.names[1]
    info = os.stat(name)
    data = bytearray(name.read_bytes())
    data[-20] ^= 1
    name.write_bytes(bytes(data))
    os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = source_files(table, "content")
    assert after.fingerprint()["files_sha256"] == before.fingerprint()["files_sha256"]
    assert after.fingerprint()["content_sha256"] != before.fingerprint()["content_sha256"]
    assert after.first_change(before) == f"{before.names[1]} (content differs)"
    with pytest.raises(DataError, match="data.fingerprint"):
        source_files(table, "md5")


def test_folders_and_shards_follow_the_same_rule(tmp_path: Path) -> None:
    (tmp_path / "f" / "cat").mkdir(parents=True)
    shutil.copy(write_table(tmp_path / "t", np.zeros((1, 8, 8, 3), np.uint8), {}, ["train"]) / "images" /
                "000000.png", tmp_path / "f" / "cat" / "1.png")
    folder = source_files(tmp_path / "f")
    assert folder.names == ["cat/1.png"]
    os.utime(tmp_path / "f" / "cat" / "1.png", ns=(1, 1))
    assert source_files(tmp_path / "f").first_change(folder) == "cat/1.png (modified)"
    (tmp_path / "s").mkdir()
    write_tar(tmp_path / "s" / "a.tar", [("k.png", b"x")])
    shards = source_files(tmp_path / "s")
    (tmp_path / "s" / "a.tar").unlink()
    write_tar(tmp_path / "s" / "a.tar", [("k.png", b"xy")])
    assert source_files(tmp_path / "s").first_change(shards) == f"{tmp_path / 's' / 'a.tar'} (modified)"
    assert DataFiles.load(tmp_path / "missing.npz") is None
