"""WebDataset shards: the index pass, reading by offset, write_table's formats and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.shards import decode_ids, id_images, write_tar
from mcl.data.table import load_table, write_table
from mcl.data.table.decode import decode_image as table_decode
from mcl.data.webdataset import (
    ShardDataset,
    ShardIndex,
    ShardReader,
    decode_bytes,
    index_shards,
    resolve_shards,
    shards_fingerprint,
)
from mcl.errors import ConfigError, DataError


def write_id_shards(root: Path, n: int = 100, shard_size: int = 16, n_test: int = 20) -> Path:
    split = ["train"] * (n - n_test) + ["test"] * n_test
    return write_table(root, id_images(n), {"parity": [str(i % 2) for i in range(n)]}, split,
                       [f"caption {i}" for i in range(n)], format="webdataset", shard_size=shard_size)





def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(id_images(value + 1, 8)[value]).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width x height`` pixels, with a tiny (useless) body: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_id_shards(tmp_path_factory.mktemp("wds") / "shards")


def test_index_pass_ids_keys_splits_attributes_captions(shards: Path) -> None:
    index = index_shards(shards)
    assert len(index) == 100 and len(index.shards) == 7  # 16 per shard
    assert index.keys[:3] == ["000000", "000001", "000002"] and index.keys[-1] == "000099"
    assert index.shard.tolist() == [i // 16 for i in range(100)]
    assert index.captions is not None and index.captions[42] == "caption 42"
    assert index.attributes == {"parity": [str(i % 2) for i in range(100)]}
    assert index.ids("train").tolist() == list(range(80)) and index.ids("test").tolist() == list(range(80, 100))
    codes, values = index.attribute_codes(index.ids("test"))
    assert values == {"parity": ["0", "1"]} and codes["parity"].tolist() == [i % 2 for i in range(80, 100)]
    assert index.where(17) == f"{shards / 'shard-000001.tar'}#000017"
    # The same shards through a brace pattern and a list give the same index.
    pattern = index_shards(str(shards / "shard-{000000..000006}.tar"))
    assert pattern.keys == index.keys and pattern.fingerprint == index.fingerprint


def test_index_save_and_load(shards: Path, tmp_path: Path) -> None:
    index = index_shards(shards)
    index.save(tmp_path / "index.npz")
    loaded = ShardIndex.load(tmp_path / "index.npz", fingerprint=index.fingerprint)
    assert loaded is not None and loaded.keys == index.keys and loaded.captions == index.captions
    assert loaded.attributes == index.attributes and loaded.shards == index.shards
    assert all(np.array_equal(getattr(loaded, a), getattr(index, a)) for a in ("shard", "offset", "size", "split"))
    assert ShardIndex.load(tmp_path / "index.npz", fingerprint="other") is None
    assert ShardIndex.load(tmp_path / "missing.npz") is None


def test_reading_by_offset_keeps_pixels_with_their_ids(shards: Path) -> None:
    index = index_shards(shards)
    dataset = ShardDataset(index, index.ids("train"), image_size=8)
    positions = np.array([70, 3, 40, 41, 0, 17])
    batch = dataset[positions]
    assert batch["index"].tolist() == positions.tolist()
    assert batch["image"].shape == (6, 8, 8, 3)
    assert decode_ids(batch["image"].numpy()).tolist() == positions.tolist()
    reader = ShardReader(index)
    assert reader.read(5)[:2] == b"\xff\xd8"  # a JPEG's first bytes, read at the indexed offset


def test_fingerprint_uses_names_sizes_mtimes_only(tmp_path: Path) -> None:
    root = write_id_shards(tmp_path / "s", n=20, shard_size=10, n_test=0)
    shards = resolve_shards(root)
    before = shards_fingerprint(shards)
    stat = os.stat(shards[0])
    data = bytearray(shards[0].read_bytes())
    data[600] ^= 0xFF  # same size, restored mtime: not detected, because no byte is read
    shards[0].write_bytes(bytes(data))
    os.utime(shards[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert shards_fingerprint(shards) == before
    os.utime(shards[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert shards_fingerprint(shards) != before


def test_write_table_formats(tmp_path: Path) -> None:
    images = id_images(12, 8)
    attributes = {"parity": [str(i % 2) for i in range(12)]}
    table = load_table(write_table(tmp_path / "j", images, attributes, ["train"] * 12, format="jpeg"), 8)
    assert table.paths[0] == "images/000000.jpg" and decode_ids(table.images).tolist() == list(range(12))
    root = write_table(tmp_path / "w", images, attributes, ["train"] * 8 + ["test"] * 4, format="webdataset",
                       shard_size=5)
    assert sorted(p.name for p in root.iterdir()) == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "shards.json"]
    assert json.loads((root / "shards.json").read_text()) == {
        "samples": 12, "shards": ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]}
    with tarfile.open(root / "shard-000000.tar") as tar:
        assert tar.getnames()[:2] == ["000000.jpg", "000000.json"]  # no .txt without captions
        assert tar.extractfile("000001.json").read() == b'{"split": "train", "parity": "1"}'
    index = index_shards(root)
    assert index.captions is None and index.split.tolist() == ["train"] * 8 + ["test"] * 4
    with pytest.raises(ConfigError, match="format: got 'gif'"):
        write_table(tmp_path / "x", images, attributes, ["train"] * 12, format="gif")


def test_long_member_names_use_tarfiles_pax_reader(tmp_path: Path) -> None:
    key = "d" * 60 + "/" + "k" * 70  # longer than ustar's 100-byte name field: a pax header
    shard = write_tar(tmp_path / "a.tar", [(f"{key}.jpg", jpeg(3)), (f"{key}.txt", b"three"), ("b.jpg", jpeg(1))])
    index = index_shards(shard)
    assert index.keys == [key, "b"] and index.captions == ["three", ""]
    assert decode_ids(ShardDataset(index, index.ids(), 8)[np.arange(2)]["image"].numpy()).tolist() == [3, 1]


def test_decode_bytes_gives_the_image_tables_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated by 90 degrees
    cases = {"a.jpg": {"format": "JPEG"}, "b.png": {"format": "PNG"}, "c.jpg": {"format": "JPEG", "exif": exif},
             "d.png": {"format": "PNG", "mode": "LA"}}
    for name, options in cases.items():
        image = photo.convert(options.pop("mode")) if "mode" in options else photo
        image.save(tmp_path / name, **options)
        expected, _ = table_decode(tmp_path / name, 16)
        assert np.array_equal(decode_bytes((tmp_path / name).read_bytes(), 16), expected), name


def test_compressed_shards(tmp_path: Path) -> None:
    plain = write_id_shards(tmp_path / "s", n=20, shard_size=20, n_test=0) / "shard-000000.tar"
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "a.tar.gz").write_bytes(gzip.compress(plain.read_bytes()))
    index = index_shards(tmp_path / "gz")
    images = ShardDataset(index, index.ids(), image_size=8)[np.arange(20)[::-1]]["image"]
    assert decode_ids(images.numpy()).tolist() == list(range(20))[::-1]


def test_corrupt_image_is_an_error_naming_shard_and_key_or_skipped(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "a.tar", [("k0.jpg", jpeg(0)), ("k1.jpg", b"not a jpeg"), ("k2.jpg", jpeg(2))])
    index = index_shards(shard)
    with pytest.raises(DataError, match=r"a\.tar#k1: image cannot be read"):
        ShardDataset(index, index.ids(), image_size=8)[np.arange(3)]
    dataset = ShardDataset(index, index.ids(), image_size=8, on_bad_image="skip")
    batch = dataset[np.arange(3)]
    assert batch["index"].tolist() == [0, 2] and decode_ids(batch["image"].numpy()).tolist() == [0, 2]
    assert dataset.stats.skipped == [f"{shard}#k1"]


def test_decompression_bomb_is_a_one_line_error(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "bomb.tar", [("ok.jpg", jpeg(0)), ("bomb.png", png_header_only(30000, 30000))])
    index = index_shards(shard)
    with pytest.raises(DataError, match=r"bomb\.tar#bomb: image cannot be read .*decompression bomb") as info:
        ShardDataset(index, index.ids(), image_size=8)[np.arange(2)]
    assert "\n" not in str(info.value)
    # Below Pillow's own hard limit, our limit still refuses it from the header.
    small = write_tar(tmp_path / "big.tar", [("big.png", png_header_only(5000, 5000))])
    with pytest.raises(DataError, match="5000x5000 pixels exceeds the limit of 1000000"):
        ShardDataset(index_shards(small), np.arange(1), image_size=8, max_pixels=10**6)[np.arange(1)]


def test_truncated_shards_are_errors_naming_them(tmp_path: Path) -> None:
    data = write_id_shards(tmp_path / "s", n=10, shard_size=10, n_test=0).joinpath("shard-000000.tar").read_bytes()
    mid_member = tmp_path / "mid.tar"
    mid_member.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(DataError, match=r"mid\.tar: truncated or not a tar shard"):
        index_shards(mid_member)
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:
        last = tar.getmembers()[-1]
    boundary = tmp_path / "boundary.tar"  # cut exactly after a member: only the end marker is missing
    boundary.write_bytes(data[: last.offset_data + -(-last.size // 512) * 512])
    with pytest.raises(DataError, match=r"boundary\.tar: truncated or not a tar shard \(no end-of-archive"):
        index_shards(boundary)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"garbage" * 200)
    with pytest.raises(DataError, match=r"garbage\.tar: truncated or not a tar shard"):
        index_shards(garbage)
    # Truncated after indexing: the reader names the shard.
    whole = tmp_path / "later.tar"
    whole.write_bytes(data)
    index = index_shards(whole)
    whole.write_bytes(data[: int(index.offset[5]) + 10])
    with pytest.raises(DataError, match=r"later\.tar: truncated shard"):
        ShardDataset(index, index.ids(), image_size=8)[np.arange(10)]


def test_samples_without_image_are_reported_and_skipped_never_misaligned(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    shard = write_tar(tmp_path / "a.tar", [
        ("k0.jpg", jpeg(0)), ("k0.txt", b"zero"),
        ("k1.txt", b"one, image lost"), ("k1.json", b'{"split": "test", "c": "x"}'),  # no image
        ("k2.txt", b"two"), ("k2.jpg", jpeg(2)), ("k2.json", b'{"c": "y"}'),
        ("k3.jpg", jpeg(3)), ("k3.png", jpeg(4)),  # a second image under one key
        ("k4.json", b"{}"),  # json only
    ])
    with caplog.at_level(logging.WARNING, logger="mcl"):
        index = index_shards(shard)
    assert index.keys == ["k0", "k2", "k3"] and index.captions == ["zero", "two", ""]
    assert index.attributes == {"c": ["", "y", ""]} and index.split.tolist() == ["train"] * 3
    assert "skipped 2 sample(s) without an image (caption/json only) (first: 'a.tar#k1', 'a.tar#k4')" in caplog.text
    assert "skipped 1 extra image(s) under one key" in caplog.text
    images = ShardDataset(index, index.ids(), image_size=8)[np.arange(3)]["image"]
    assert decode_ids(images.numpy()).tolist() == [0, 2, 3]  # the caption "two" stays with image 2


def test_bad_metadata_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"a\.tar#k0\.json: not valid JSON"):
        index_shards(write_tar(tmp_path / "a.tar", [("k0.jpg", jpeg(0)), ("k0.json", b"{oops")]))
    with pytest.raises(DataError, match=r"b\.tar#k0\.json: 'split' is 'val'"):
        index_shards(write_tar(tmp_path / "b.tar", [("k0.jpg", jpeg(0)), ("k0.json", b'{"split": "val"}')]))
    with pytest.raises(DataError, match="no samples with an image"):
        index_shards(write_tar(tmp_path / "c.tar", [("k0.txt", b"lonely")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards"):
        index_shards(tmp_path / "empty")
    with pytest.raises(DataError, match="shard not found"):
        index_shards(tmp_path / "missing.tar")
