"""One decoder, an explicit fit: the same shard bytes give the same pixels through every entry point."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from data.shards import write_tar
from mcl.data.image_text import decode_image as image_text_decode
from mcl.data.image_text import load_webdataset
from mcl.data.sources import open_source
from mcl.data.table.decode import decode_image as table_decode
from mcl.data.webdataset import ShardDataset, decode_bytes, index_shards


def _photo(fmt: str, orientation: int = 1) -> bytes:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    pixels[:, :20] //= 2  # structure, so that a crop and a squash differ
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buffer, format=fmt, exif=exif) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def shard(tmp_path: Path) -> tuple[Path, list[bytes]]:
    blobs = [_photo("JPEG"), _photo("PNG"), _photo("JPEG", orientation=6)]
    members = []
    for i, (blob, ext) in enumerate(zip(blobs, ["jpg", "png", "jpg"], strict=True)):
        members += [(f"k{i}.{ext}", blob), (f"k{i}.txt", b"a photo")]
    root = tmp_path / "shards"
    root.mkdir()
    write_tar(root / "a.tar", members)
    return root, blobs


@pytest.mark.parametrize("fit", ["crop", "squash"])
def test_every_entry_point_gives_the_same_pixels_for_the_same_fit(shard, tmp_path, fit):
    root, blobs = shard
    expected = np.stack([decode_bytes(blob, 16, fit=fit) for blob in blobs])
    for i, blob in enumerate(blobs):
        (tmp_path / f"{i}.img").write_bytes(blob)
        assert np.array_equal(table_decode(tmp_path / f"{i}.img", 16, fit)[0], expected[i])
        assert np.array_equal(image_text_decode(blob, 16, fit), expected[i])
    assert np.array_equal(load_webdataset(root, 16, fit=fit).images, expected)
    index = index_shards(root)
    assert np.array_equal(ShardDataset(index, index.ids(), 16, fit=fit)[np.arange(3)]["image"].numpy(), expected)
    if fit == "squash":  # what a WebDataset source feeds training (memory and streamed)
        assert np.array_equal(np.asarray(open_source(root, 16).images), expected)
        assert np.array_equal(np.asarray(open_source(root, 16, stream=True).images), expected)


def test_each_entry_point_keeps_its_default(shard):
    root, blobs = shard

    def old_crop(blob: bytes) -> np.ndarray:  # image_text's decoder before the unification
        with Image.open(io.BytesIO(blob)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(ImageOps.fit(image, (16, 16), Image.Resampling.BICUBIC))

    assert np.array_equal(load_webdataset(root, 16).images, np.stack([old_crop(b) for b in blobs]))
    index = index_shards(root)
    squash = np.stack([decode_bytes(blob, 16, fit="squash") for blob in blobs])
    assert np.array_equal(ShardDataset(index, index.ids(), 16)[np.arange(3)]["image"].numpy(), squash)
    assert not np.array_equal(squash, np.stack([old_crop(b) for b in blobs]))
    with pytest.raises(ValueError, match="fit must be one of"):
        decode_bytes(blobs[0], 16, fit="stretch")
