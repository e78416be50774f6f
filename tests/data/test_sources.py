"""open_source picks the image table or the image folder reader; source_digest identifies the listing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data.sources import open_source, source_digest, source_kind
from mcl.errors import DataError


def _image(root: Path, name: str, colour: tuple[int, int, int] = (0, 0, 0)) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 5), colour).save(root / name)


@pytest.fixture
def both(tmp_path: Path) -> Path:
    """Class folders plus a labels.csv that lists only one of the images: the table wins."""
    root = tmp_path / "both"
    _image(root, "cat/a.png", (1, 1, 1))
    _image(root, "dog/b.png", (2, 2, 2))
    (root / "labels.csv").write_text("path,animal\ndog/b.png,dog\n")
    return root


def test_table_when_labels_csv_exists(both: Path) -> None:
    assert source_kind(both) == "table"
    table = open_source(both, 5, progress=False)
    assert table.paths == ["dog/b.png"] and table.attribute_values == {"animal": ["dog"]}
    assert source_digest(both) == hashlib.sha256((both / "labels.csv").read_bytes()).hexdigest()


def test_folder_otherwise(both: Path) -> None:
    (both / "labels.csv").unlink()
    assert source_kind(both) == "folder"
    table = open_source(both, 5, on_bad_image="error", cache=False, allow_outside_paths=False, progress=False)
    assert table.paths == ["cat/a.png", "dog/b.png"] and table.attribute_values == {"class": ["cat", "dog"]}
    assert [int(image[0, 0, 0]) for image in table.images] == [1, 2]
    digest = source_digest(both)
    assert digest == source_digest(both)
    (both / "dog" / "b.png").rename(both / "cat" / "b.png")
    assert source_digest(both) != digest  # a file moving class changes the identity


def test_options_reach_the_loaders(tmp_path: Path) -> None:
    _image(tmp_path / "outside", "x.png", (7, 7, 7))
    root = tmp_path / "t"
    root.mkdir()
    (root / "labels.csv").write_text("path\n../outside/x.png\nmissing.png\n")
    with pytest.raises(DataError, match="outside"):
        open_source(root, 5, progress=False)
    table = open_source(root, 5, on_bad_image="skip", allow_outside_paths=True, progress=False)
    assert table.paths == ["../outside/x.png"] and (table.images == 7).all()
    assert isinstance(open_source(root, 5, on_bad_image="skip", cache=True, allow_outside_paths=True,
                                  progress=False).images, np.memmap)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: None, "not found; expected a directory with labels.csv"),
        (lambda root: root.write_text("x"), "not a directory; expected a directory with labels.csv"),
        (lambda root: root.mkdir(), r"no labels\.csv and no images in class folders; expected DIR/<class>/<image>"),
    ],
)
def test_neither_layout(tmp_path: Path, make, expected: str) -> None:
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=expected) as info:
        open_source(root, 5, progress=False)
    assert str(info.value).startswith(str(root)) and "\n" not in str(info.value)
