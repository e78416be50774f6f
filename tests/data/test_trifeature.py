"""Trifeature generator: table layout, balance, determinism, and that each feature shows in the pixels."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from mcl.data import GENERATORS, generate_trifeature, load_table
from mcl.data.trifeature import BACKGROUND, COLORS, SHAPES, TEXTURES, render_trifeature
from mcl.errors import ConfigError


def _object_mask(images: np.ndarray) -> np.ndarray:
    return (images != BACKGROUND).any(axis=-1)


def test_generate_writes_a_balanced_table(tmp_path: Path) -> None:
    root = generate_trifeature(tmp_path / "tri", n_train=30, n_test=20, image_size=16, seed=0, progress=False)
    table = load_table(root, 16, progress=False)
    assert table.images.shape == (50, 16, 16, 3) and table.images.dtype == np.uint8
    assert table.attribute_names() == ["shape", "texture", "color"]
    assert table.attribute_values["shape"] == sorted(SHAPES)
    assert table.attribute_values["texture"] == sorted(TEXTURES)
    assert table.attribute_values["color"] == sorted(COLORS)
    for split, count in (("train", 3), ("test", 2)):
        part = table.subset(split)
        for codes in part.attributes.values():
            assert np.bincount(codes, minlength=10).tolist() == [count] * 10
    shape = table.attribute_values["shape"][table.attributes["shape"][0]]
    colour = table.attribute_values["color"][table.attributes["color"][0]]
    assert table.captions is not None and table.captions[0].startswith(f"a {colour} {shape} with ")
    assert GENERATORS["trifeature"] is generate_trifeature


def test_generate_is_deterministic(tmp_path: Path) -> None:
    def images(seed: int, name: str) -> np.ndarray:
        root = generate_trifeature(
            tmp_path / name, n_train=10, n_test=0, image_size=16, seed=seed, progress=False
        )
        return np.array(load_table(root, 16, cache=False, progress=False).images)

    np.testing.assert_array_equal(images(1, "a"), images(1, "b"))
    assert not np.array_equal(images(1, "a"), images(2, "c"))


@pytest.mark.parametrize("size", [32, 64])
def test_render_shapes_sizes(size: int) -> None:
    images = render_trifeature(["circle", "square"], ["solid", "grid"], ["red", "white"], size, seed=0)
    assert images.shape == (2, size, size, 3)
    coverage = _object_mask(images).mean(axis=(1, 2))
    assert ((coverage > 0.25) & (coverage < 0.7)).all()  # the shape spans most of the image
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == BACKGROUND).all()


def test_colours_differ_in_mean_colour() -> None:
    n = len(COLORS)
    images = render_trifeature(["square"] * n, ["solid"] * n, list(COLORS), 32, seed=0)
    means = np.array(
        [image[mask].mean(axis=0) for image, mask in zip(images, _object_mask(images), strict=True)]
    )
    for (i, name), expected in zip(enumerate(COLORS), COLORS.values(), strict=True):
        assert np.abs(means[i] - expected).max() < 20, name
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[np.triu_indices(n, 1)].min() > 50


def test_shapes_differ_in_mask() -> None:
    n = len(SHAPES)
    masks = _object_mask(render_trifeature(list(SHAPES), ["solid"] * n, ["white"] * n, 32, seed=0))
    for i, j in combinations(range(n), 2):
        iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
        assert iou < 0.9, (SHAPES[i], SHAPES[j])


def test_textures_differ_inside_the_shape() -> None:
    n = len(TEXTURES)
    images = render_trifeature(["circle"] * n, list(TEXTURES), ["white"] * n, 32, seed=0)
    centre = images[:, 10:22, 10:22, 0].astype(float)  # always inside the circle
    assert centre[0].std() == 0  # solid
    assert (centre[1:].std(axis=(1, 2)) > 30).all()  # a visible luminance pattern
    on_fraction = (centre > 200).mean(axis=(1, 2))
    assert ((on_fraction[1:] > 0.1) & (on_fraction[1:] < 0.9)).all()
    for i, j in combinations(range(1, n), 2):
        assert not np.array_equal(centre[i], centre[j]), (TEXTURES[i], TEXTURES[j])


def test_render_is_deterministic() -> None:
    args = (list(SHAPES), list(TEXTURES), list(COLORS), 32)
    np.testing.assert_array_equal(render_trifeature(*args, seed=5), render_trifeature(*args, seed=5))
    assert not np.array_equal(render_trifeature(*args, seed=5), render_trifeature(*args, seed=6))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_train"):
        generate_trifeature(tmp_path, n_train=-1, progress=False)
    with pytest.raises(ConfigError, match="image_size"):
        generate_trifeature(tmp_path, image_size=4, progress=False)
    with pytest.raises(ValueError, match="unknown shapes"):
        render_trifeature(["hexagon"], ["solid"], ["red"])
