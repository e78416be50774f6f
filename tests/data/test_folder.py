"""ImageFolder layout: classes as the 'class' attribute, splits, stable order, containment and every error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data.folder import load_folder, read_folder
from mcl.data.table import ImageTable
from mcl.data.table import decode as decode_module
from mcl.errors import DataError


def _image(root: Path, name: str, colour: tuple[int, int, int] = (0, 0, 0), size: int = 6) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(root / name)


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    _image(root, "train/dog/b.png", (2, 2, 2))
    _image(root, "train/cat/a.png", (1, 1, 1))
    _image(root, "train/dog/deeper/c.jpg", (250, 250, 250))
    _image(root, "test/cat/d.png", (4, 4, 4))
    _image(root, "test/bird/e.png", (5, 5, 5))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    _image(root, "train/dog/.hidden.png")
    return root


def test_split_layout(pets: Path) -> None:
    table = load_folder(pets, 6, progress=False)
    assert isinstance(table, ImageTable) and table.root == pets
    assert table.paths == ["test/bird/e.png", "test/cat/d.png", "train/cat/a.png", "train/dog/b.png",
                           "train/dog/deeper/c.jpg"]
    assert table.split.tolist() == ["test", "test", "train", "train", "train"]
    assert table.attribute_names() == ["class"]
    assert table.attribute_values == {"class": ["bird", "cat", "dog"]}
    assert table.attributes["class"].dtype == np.int64
    assert table.attributes["class"].tolist() == [0, 1, 1, 2, 2]
    assert table.captions is None
    assert [int(image[0, 0, 0]) for image in table.images[:4]] == [5, 4, 1, 2]
    assert (np.abs(table.images[4].astype(int) - 250) <= 3).all()
    train = table.subset("train")
    assert train.attributes["class"].tolist() == [1, 2, 2]  # codes shared with the test split


def test_flat_layout_is_all_train(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _image(root, "zebra/1.PNG", size=10)
    _image(root, "ant/2.png", size=6)
    table = load_folder(root, 6, cache=False, progress=False)
    assert table.paths == ["ant/2.png", "zebra/1.PNG"]
    assert table.split.tolist() == ["train", "train"]
    assert table.attribute_values["class"] == ["ant", "zebra"] and table.attributes["class"].tolist() == [0, 1]


def test_cache_and_resize_log(pets: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mcl"):
        first = load_folder(pets, 4, progress=False)
    assert f"{pets}: images 6x6 resized to 4x4 (5 of 5)" in caplog.text
    assert (pets / ".mcl_cache" / "images_4.npy").exists()
    assert read_folder(pets).paths == first.paths  # the cache folder is not a class

    def fail(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(decode_module, "decode_image", fail)
    again = load_folder(pets, 4, progress=False)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, first.images)
    _image(pets, "train/cat/z.png")  # a new file changes the listing: the cache is not reused
    with pytest.raises(DataError, match="cannot be read"):
        load_folder(pets, 4, progress=False)


def test_bad_images(pets: Path, caplog: pytest.LogCaptureFixture) -> None:
    (pets / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"^{pets}: image 'train/cat/broken\.png' cannot be read .*on_bad_image"):
        load_folder(pets, 6, progress=False)
    with caplog.at_level(logging.WARNING, logger="mcl"):
        table = load_folder(pets, 6, on_bad_image="skip", progress=False)
    assert "train/cat/broken.png" not in table.paths and len(table) == 5
    assert "skipped 1 unreadable image(s): 'train/cat/broken.png'" in caplog.text


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _image(root, "cat/a.png")
    _image(tmp_path / "outside", "x.png")
    (root / "cat" / "link.png").symlink_to(tmp_path / "outside" / "x.png")
    with pytest.raises(DataError, match=r"'cat/link\.png' resolves to .*outside/x\.png, outside .*allow_outside_paths"):
        load_folder(root, 6, progress=False)
    assert len(load_folder(root, 6, progress=False, allow_outside_paths=True)) == 2
    (root / "cat" / "link.png").unlink()
    (root / "dog").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(DataError, match=r"folder 'dog' resolves to .*outside, outside "):
        read_folder(root)
    (root / "dog").unlink()
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # a cycle inside the folder ends
    assert read_folder(root).paths == ["cat/a.png"]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (["train/cat/a.png", "val/cat/b.png"], r"mixes split folders \(train\) with other folders \(val\)"),
        (["loose.png", "cat/a.png"], r"image 'loose\.png' is not inside a class folder"),
        (["train/loose.png", "train/cat/a.png"], r"image 'train/loose\.png' is not inside a class folder"),
        (["empty_class/"], r"no labels\.csv and no images in class folders; expected DIR/<class>/<image>"),
    ],
)
def test_folder_errors(tmp_path: Path, layout: list[str], expected: str) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    for name in layout:
        if name.endswith("/"):
            (root / name).mkdir()
        else:
            _image(root, name)
    with pytest.raises(DataError, match=expected) as info:
        load_folder(root, 6, progress=False)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        load_folder(tmp_path / "nope", 6, progress=False)


def test_unreadable_class_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "locked"
    _image(root, "cat/a.png")
    _image(root, "dog/sub/b.png")
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike) -> object:  # as if chmod 0 (root would read it anyway)
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"cannot list .*dog/sub \(Permission denied\)"):
        read_folder(root)
