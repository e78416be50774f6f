"""The automatic held-out split: stable per key, logged, the same for every command that loads the data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcl.data import load_table
from mcl.data.split import held_out, hold_out, key_fraction


def test_the_split_of_a_key_does_not_move_when_other_files_are_added() -> None:
    keys = [f"cat/{i}.png" for i in range(500)]
    before = held_out(keys, 0.1)
    after = held_out(keys + [f"dog/{i}.png" for i in range(300)], 0.1)
    assert np.array_equal(before, after[:500])
    assert 25 <= before.sum() <= 75  # about 10 %
    assert key_fraction("cat/1.png") == key_fraction("cat/1.png")


def test_tiny_sets_keep_one_test_and_one_training_row() -> None:
    assert held_out(["a.png", "b.png"], 0.01).sum() == 1
    assert held_out(["a.png", "b.png"], 0.99).sum() == 1
    assert not held_out(["a.png", "b.png"], 0.0).any()


def photo_folder(root, per_class: int = 12, size: int = 12):
    """``root/<colour>/<i>.png`` with no train/test folders: a folder of photos sorted into classes."""
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.clip(np.array(colour) + rng.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def test_load_table_reads_an_image_folder_and_hold_out_splits_it(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    table = load_table(photo_folder(tmp_path / "photos"), image_size=12, progress=False)
    assert len(table) == 24 and set(table.split) == {"train"} and table.attribute_names() == ["class"]
    with caplog.at_level("INFO", logger="mcl"):
        split = hold_out(table, 0.25)
    assert 1 <= (split.split == "test").sum() < 24
    assert "held out" in caplog.text and "data.test_fraction=0.25" in caplog.text
    assert np.array_equal(split.split, hold_out(table, 0.25).split)
    assert hold_out(split, 0.5) is split  # a table that has a test split keeps it
    assert hold_out(table, 0.0) is table
