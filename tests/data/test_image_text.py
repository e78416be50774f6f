"""img2dataset folders and WebDataset shards: pairing by key, skipping, streaming, materialising."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.shards import write_tar
from mcl.data.image_text import (
    _webdataset_samples,
    expand_shards,
    load_img2dataset,
    load_webdataset,
    scan_img2dataset,
)
from mcl.errors import DataError


def _image_bytes(value: int, fmt: str = "JPEG", size: tuple[int, int] = (20, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def img2dataset_dir(tmp_path: Path) -> Path:
    """Two shards, 5 images; 000000002 has no .txt, 000010004 has a .txt but no image."""
    root = tmp_path / "i2d"
    for shard, ids in (("00000", [0, 1, 2, 3]), ("00001", [4])):
        (root / shard).mkdir(parents=True)
        for i in ids:
            key = f"{shard}{i:04d}"
            if key != "000010004":
                (root / shard / f"{key}.jpg").write_bytes(_image_bytes(40 * i))
            if key != "000000002":
                (root / shard / f"{key}.txt").write_text(f"caption {i}\n")
            (root / shard / f"{key}.json").write_text("{}")
    (root / "00000_stats.json").write_text("{}")
    return root


def test_img2dataset_pairs_by_stem_and_reports_missing(img2dataset_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mcl"):
        pairs = scan_img2dataset(img2dataset_dir)
    assert [(p.key, p.caption) for p in pairs] == [
        ("00000/000000000", "caption 0"), ("00000/000000001", "caption 1"), ("00000/000000003", "caption 3")]
    assert all(p.image_path.stem == Path(p.key).name for p in pairs)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 image(s) without a caption" in messages and "000000002.jpg" in messages
    assert "skipped 1 caption(s) without an image" in messages and "000010004.txt" in messages


def test_load_img2dataset_table(img2dataset_dir: Path) -> None:
    table = load_img2dataset(img2dataset_dir, image_size=8)
    assert table.images.shape == (3, 8, 8, 3) and table.images.dtype == np.uint8
    assert table.captions == ["caption 0", "caption 1", "caption 3"]
    assert table.paths[2] == "00000/000000003" and list(table.split) == ["train"] * 3
    # Image i is red 40*i: the caption of every row belongs to its own image.
    reds = table.images[..., 0].reshape(3, -1).mean(1)
    assert np.allclose(reds, [0, 40, 120], atol=6)
    assert len(load_img2dataset(img2dataset_dir, image_size=8, limit=2)) == 2


def test_img2dataset_errors(tmp_path: Path, img2dataset_dir: Path) -> None:
    with pytest.raises(DataError, match="directory not found"):
        scan_img2dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image/caption pairs"):
        scan_img2dataset(tmp_path / "empty")
    (img2dataset_dir / "00000" / "000000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="000000001.jpg: image cannot be read"):
        load_img2dataset(img2dataset_dir, image_size=8)
    assert len(load_img2dataset(img2dataset_dir, image_size=8, on_bad_image="skip")) == 2





@pytest.fixture
def shards(tmp_path: Path) -> Path:
    write_tar(tmp_path / "data-000.tar", [
        ("s/000.jpg", _image_bytes(0)), ("s/000.txt", b"zero"), ("s/000.json", b"{}"),
        ("s/001.png", _image_bytes(100, "PNG")), ("s/001.txt", "caf\u00e9 one".encode()),
        ("s/002.jpg", _image_bytes(200)),  # no caption
    ])
    write_tar(tmp_path / "data-001.tar", [("003.txt", b"three"), ("003.jpg", _image_bytes(60))])
    return tmp_path


def test_iter_webdataset_groups_members_by_key(shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mcl"):
        pairs = [(image, caption) for _, image, caption in
                 _webdataset_samples(expand_shards(str(shards / "data-{000..001}.tar")), None, "error")]
    assert [caption for _, caption in pairs] == ["zero", "caf\u00e9 one", "three"]
    assert pairs[0][0].shape == (12, 20, 3)  # original size without image_size
    assert "skipped 1 sample(s) without both an image and a caption" in caplog.text and "'s/002'" in caplog.text


def test_load_webdataset(shards: Path) -> None:
    table = load_webdataset([shards / "data-000.tar", shards / "data-001.tar"], image_size=6)
    assert table.images.shape == (3, 6, 6, 3)
    assert table.captions == ["zero", "caf\u00e9 one", "three"]
    assert table.paths == ["data-000.tar#s/000", "data-000.tar#s/001", "data-001.tar#003"]
    assert np.allclose(table.images[:, ..., 0].reshape(3, -1).mean(1), [0, 100, 60], atol=6)
    assert load_webdataset(shards / "data-000.tar", image_size=6, limit=1).captions == ["zero"]


def test_webdataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="shard not found"):
        load_webdataset(tmp_path / "nope.tar", image_size=4)
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="not a readable tar shard"):
        load_webdataset(tmp_path / "bad.tar", image_size=4)
    write_tar(tmp_path / "text-only.tar", [("a.txt", b"hello")])
    with pytest.raises(DataError, match="no image/caption samples"):
        load_webdataset(tmp_path / "text-only.tar", image_size=4)


def test_expand_shards() -> None:
    assert [p.name for p in expand_shards("d/x-{08..10}.tar")] == ["x-08.tar", "x-09.tar", "x-10.tar"]
    assert expand_shards(["a.tar", "b.tar"]) == [Path("a.tar"), Path("b.tar")]
    assert expand_shards("plain.tar") == [Path("plain.tar")]
