"""trifeature-oriented generator: table layout, balance, determinism, and that orientation shows in the pixels.

The pixel tests render at 32 px with Pillow's rasteriser and compare masks with wide margins, not pinned values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcl.data import GENERATORS, load_table
from mcl.data.trifeature import BACKGROUND, SHAPES, render_scenes, sample_poses
from mcl.data.trifeature_oriented import (
    ORIENTATION_BIN_DEG,
    ORIENTATION_SPREAD,
    ORIENTATIONS,
    ORIENTED_SHAPES,
    generate_oriented_trifeature,
    orientation_degrees,
)


def _masks(shape: str, degrees: np.ndarray, size: int = 32) -> np.ndarray:
    """Object masks ``(N, size, size)`` of one solid shape, centred, at each rotation."""
    n = len(degrees)
    scenes = sample_poses(np.random.default_rng(0), np.full(n, SHAPES.index(shape)), np.zeros(n, int),
                          np.zeros(n, int))
    scenes.centre[:] = 0.5
    scenes.shape_angle = np.deg2rad(degrees)
    return (render_scenes(scenes, size) != BACKGROUND).any(axis=-1)


def _closest_cross_bin_mismatch(shape: str) -> float:
    """Smallest fraction of differing mask pixels between rotations from different bins, best shift of <= 1 px."""
    edges = -45 + (np.arange(4)[:, None] + 0.5 + np.array([-0.5, 0.5]) * ORIENTATION_SPREAD) * ORIENTATION_BIN_DEG
    degrees = np.concatenate([np.linspace(low, high, 9) for low, high in edges])
    bins = np.repeat(np.arange(4), 9)
    masks = _masks(shape, degrees)
    shifted = np.stack([np.roll(masks, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
    mismatch = (masks[:, None, None] != shifted[None]).mean(axis=(-1, -2)).min(axis=-1)
    return float(mismatch[bins[:, None] != bins[None]].min())


def test_oriented_table_is_balanced_and_deterministic(tmp_path: Path) -> None:
    def write(name: str, seed: int) -> Path:
        return generate_oriented_trifeature(tmp_path / name, n_train=40, n_test=20, image_size=16, seed=seed,
                                            progress=False)

    table = load_table(write("a", 0), 16, progress=False)
    assert table.attribute_names() == ["shape", "color", "orientation"]
    assert table.attribute_values["orientation"] == sorted(ORIENTATIONS)
    for split, count in (("train", 10), ("test", 5)):
        codes = table.subset(split).attributes["orientation"]
        assert np.bincount(codes, minlength=4).tolist() == [count] * 4
    assert set(table.attribute_values["shape"]) == set(ORIENTED_SHAPES)
    assert table.captions is not None and " tilted " in table.captions[0]
    assert {c.split(" degrees ")[-1] for c in table.captions} == {"clockwise", "counter-clockwise"}
    again = load_table(write("b", 0), 16, cache=False, progress=False)
    np.testing.assert_array_equal(np.array(table.images), np.array(again.images))
    assert GENERATORS["trifeature-oriented"] is generate_oriented_trifeature


def test_orientation_angles_stay_inside_their_bins_and_show_in_the_pixels() -> None:
    codes = np.repeat(np.arange(4), 50)
    angles = orientation_degrees(np.random.default_rng(0), codes)
    low = -45 + codes * ORIENTATION_BIN_DEG
    assert ((angles > low + 0.1 * ORIENTATION_BIN_DEG) & (angles < low + 0.9 * ORIENTATION_BIN_DEG)).all()
    # the same solid shape at the two extreme bins: the rotation changes the object's pixels
    masks = _masks("tee", np.array([-34.0, 34.0]))
    rotated, mirrored = (masks[0] != masks[1]).mean(), (masks[0] != masks[1][:, ::-1]).mean()
    # the tee is mirror-symmetric: -a is (up to rasterisation) a mirrored +a, so a flip undoes the difference
    assert rotated > 0.05 and mirrored < rotated / 3


def test_every_oriented_shape_looks_different_in_every_orientation_bin() -> None:
    # Each kept shape differs in >= 4 % of the pixels between any two rotations of different bins (measured);
    # circle, pentagon and star (rotational period <= 72 degrees, under the 81-degree span) stay under 2 %.
    for shape in ORIENTED_SHAPES:
        assert _closest_cross_bin_mismatch(shape) > 0.03, shape
    for shape in sorted(set(SHAPES) - set(ORIENTED_SHAPES)):
        assert _closest_cross_bin_mismatch(shape) < 0.03, shape


def test_positive_angles_turn_counter_clockwise() -> None:
    # A tee turned +30 degrees: its bar's topmost pixels lie right of the centre (its right end rises).
    mask = _masks("tee", np.array([30.0]))[0]
    rows, cols = np.nonzero(mask)
    assert cols[rows <= rows.min() + 2].mean() > mask.shape[1] / 2 + 1
    assert set(ORIENTED_SHAPES) <= set(SHAPES) and {"circle", "pentagon", "star"}.isdisjoint(ORIENTED_SHAPES)
