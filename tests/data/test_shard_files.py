"""The one tar reader: size limits from headers, links, non-regular files, forged sizes, JSON nesting (issue 20)."""

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.shards import write_tar
from mcl.data.image_text import load_webdataset
from mcl.data.shard_files import MAX_JSON_DEPTH, open_shard, parse_json, read_members
from mcl.data.sources import open_source
from mcl.data.webdataset import index_shards
from mcl.errors import DataError


def png(value: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_text_member_over_the_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "a.tar", [("k0.png", png(0)), ("k0.txt", b"x" * 5000)])
    with pytest.raises(DataError, match=r"a\.tar#k0\.txt: 5000 bytes, more than data\.max_text_bytes \(4096\)"):
        index_shards(shard, max_text_bytes=4096)
    with pytest.raises(DataError, match="more than data.max_text_bytes"):
        load_webdataset(shard, image_size=8, max_text_bytes=4096)
    assert index_shards(shard).captions[0] == "x" * 5000  # the default limit (1 MiB) lets it through


def test_the_limit_is_checked_before_reading(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "a.tar", [("k0.png", png(0)), ("k0.txt", b"x" * 5000)])

    class NoBigReads(io.FileIO):
        def read(self, size=-1):
            assert 0 <= size <= 4096, f"read of {size} bytes"
            return super().read(size)

    with NoBigReads(shard, "rb") as raw, pytest.raises(DataError, match="more than data.max_text_bytes"):
        read_members(shard, raw, max_text_bytes=4096)


def _base256_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    block[124:136] = b"\x80" + size.to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


@pytest.mark.parametrize("name", ["k0.txt", "k0.png"])
@pytest.mark.parametrize("compressed", [False, True])
def test_forged_base256_size_is_a_one_line_error(tmp_path: Path, name: str, compressed: bool) -> None:
    data = _base256_header(name, 2**62) + bytes(2048)
    shard = tmp_path / "forged.tar"
    shard.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(DataError) as info:
        index_shards(shard)
    assert "forged.tar" in str(info.value) and "\n" not in str(info.value)


def test_json_nested_deeply_is_a_one_line_error(tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DataError, match="nested more than"):
        parse_json(deep, "x.json")
    with pytest.raises(DataError, match="nested more than"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "y.json")
    assert parse_json(json.dumps({"a": [[0]]}).encode(), "z.json") == {"a": [[0]]}
    shard = write_tar(tmp_path / "a.tar", [("k0.png", png(0)), ("k0.json", b'{"a": ' + deep + b"}")])
    with pytest.raises(DataError, match=r"a\.tar#k0\.json: JSON nested more than"):
        index_shards(shard)


def test_fifo_as_shard_or_caption_is_refused_by_type(tmp_path: Path) -> None:
    fifo = tmp_path / "shard.tar"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(DataError, match="not a regular file"):
        index_shards(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        open_shard(fifo)
    assert time.perf_counter() - started < 5


def test_hard_links_are_resolved_and_symlinks_counted(tmp_path: Path, caplog) -> None:
    shard = tmp_path / "links.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in [("k0.png", png(10)), ("k0.txt", b"first")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, target in [("k1.png", tarfile.LNKTYPE, "k0.png"), ("k1.txt", tarfile.LNKTYPE, "k0.txt"),
                                   ("k2.png", tarfile.SYMTYPE, "k0.png"), ("k3.png", tarfile.FIFOTYPE, "")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    with caplog.at_level(logging.WARNING, logger="mcl"):
        index = index_shards(shard)
    assert list(index.keys) == ["k0", "k1"]
    assert list(index.captions) == ["first", "first"]
    assert index.offset[0] == index.offset[1]
    text = caplog.text
    assert "hard link(s) resolved" in text and "symbolic link member(s)" in text and "FIFO" in text


def test_on_bad_image_skip_for_shards_in_memory_and_streamed(tmp_path: Path, caplog) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "a.tar", [("k0.png", png(10)), ("k1.png", b"garbage"), ("k2.png", png(30))])
    with pytest.raises(DataError, match=r"a\.tar#k1: cannot be decoded"):
        open_source(shards, 8)
    for stream in (False, True):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mcl"):
            table = open_source(shards, 8, on_bad_image="skip", stream=stream)
        assert list(table.paths) == ["k0", "k2"]
        assert np.asarray(table.images)[:, 0, 0, 0].tolist() == [10, 30]
        assert "skipped 1 unreadable image(s)" in caplog.text


CAPTION_BOMB = """
import gzip, resource, sys, tarfile
from pathlib import Path
from mcl.data.webdataset import index_shards
from mcl.errors import DataError
path = Path(sys.argv[1])
size = int(sys.argv[2])
with gzip.open(path, "wb", compresslevel=1) as raw:
    info = tarfile.TarInfo("k0.txt"); info.size = size
    raw.write(info.tobuf(format=tarfile.USTAR_FORMAT))
    chunk = b"a" * (1 << 20)
    for _ in range(size // len(chunk)):
        raw.write(chunk)
    raw.write(bytes(1024))
try:
    index_shards(path)
except DataError as exc:
    print("error:", exc)
print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_caption_bomb_does_not_take_memory(tmp_path: Path) -> None:
    size = 64 << 20  # 64 MiB of caption here; benchmarks/hostile_input.py measures 1 GiB
    out = subprocess.run([sys.executable, "-c", CAPTION_BOMB, str(tmp_path / "bomb.tar.gz"), str(size)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "more than data.max_text_bytes" in out  # refused from the header: peak RSS in benchmarks/
