"""Trifeature-oriented: solid Trifeature shapes whose orientation is a labelled, easily suppressed attribute.

Attributes ``shape`` (7, :data:`ORIENTED_SHAPES`), ``color`` (10) and ``orientation`` (4): the shape's rotation
falls in one of four 22.5-degree bins within the +-45 degrees Trifeature draws from (:data:`ORIENTATIONS`,
named by their centres), taken from the middle 60 % of its bin so neighbouring classes never touch (rotations
span -40.5..+40.5 degrees). Only shapes whose rotational period (90 degrees or more) exceeds that 81-degree span
are drawn: a circle looks the same at every angle, and a pentagon or star turned by -34 or +38 degrees is the
same mask, so their orientation labels would not match the pixels. Texture is ``solid`` for every image.
Orientation is a fine attribute that crops keep and that the salient colour and shape suppress in contrastive
learning, so it is the weak attribute of this set (neither texture nor digit). Horizontal flips mirror the
rotation. A positive angle turns the shape counter-clockwise on screen.

Example:
    >>> generate_oriented_trifeature("data/oriented", n_train=1000, n_test=400, image_size=16)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mcl.data.table import balanced_codes, check_generator_args, split_column, write_table
from mcl.data.trifeature import COLORS, MAX_ROTATION_DEG, SHAPES, render_scenes, sample_poses

# Shapes whose rotational period (triangle 120, square/plus/fivesquare 90, rhombus 180, tee/trapezoid 360
# degrees) exceeds the span of the rotations below; circle (any angle), pentagon and star (72) do not.
ORIENTED_SHAPES = ("triangle", "square", "plus", "tee", "rhombus", "fivesquare", "trapezoid")
# The rotation bin of a solid shape, named by its centre in degrees (bins of 22.5 within +-45,
# centres -33.75, -11.25, +11.25, +33.75; each drawn from the middle 60 % of its bin).
ORIENTATIONS = ("tilt-34", "tilt-11", "tilt+11", "tilt+34")
ORIENTATION_BIN_DEG = 22.5
ORIENTATION_SPREAD = 0.6
# Poses and rasterisation are the Trifeature renderer's (sample_poses, render_scenes): shared rather than copied.


def orientation_degrees(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """Rotation (degrees, + counter-clockwise) of each orientation code ``(N,)``, uniform over the middle of its bin."""
    centre = -MAX_ROTATION_DEG + (np.asarray(codes) + 0.5) * ORIENTATION_BIN_DEG
    return centre + rng.uniform(-0.5, 0.5, len(centre)) * ORIENTATION_SPREAD * ORIENTATION_BIN_DEG


def render_oriented_table(n_train: int, n_test: int, image_size: int, seed: int, progress: bool = False
                          ) -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """Images, attribute columns (``shape``, ``color``, ``orientation``) and split of a ``trifeature-oriented`` table.

    Shapes are solid (texture ``solid``) and drawn from :data:`ORIENTED_SHAPES`; the rotation of image i is
    drawn uniformly from the middle ``ORIENTATION_SPREAD`` of its orientation bin (``ORIENTATIONS``: -45..-22.5,
    -22.5..0, 0..22.5, 22.5..45 degrees, counter-clockwise positive, the shape's rotation as
    :func:`mcl.data.trifeature.render_trifeature` draws it). Attributes are independent and balanced within
    each split; everything is determined by ``seed``.
    """
    check_generator_args(n_train, n_test, image_size)
    rng = np.random.default_rng(seed)
    shape, color, orientation = (balanced_codes(rng, n_train, n_test, n)
                                 for n in (len(ORIENTED_SHAPES), len(COLORS), len(ORIENTATIONS)))
    shape_index = np.array([SHAPES.index(name) for name in ORIENTED_SHAPES])[shape]
    scenes = sample_poses(rng, shape_index, np.zeros_like(shape), color)
    scenes.shape_angle = np.deg2rad(orientation_degrees(rng, orientation))
    images = render_scenes(scenes, image_size, progress)
    names = {"shape": [ORIENTED_SHAPES[i] for i in shape], "color": [list(COLORS)[i] for i in color],
             "orientation": [ORIENTATIONS[i] for i in orientation]}
    return images, names, split_column(n_train, n_test)


def _caption(color: str, shape: str, orientation: str) -> str:
    degrees = orientation.removeprefix("tilt")
    turn = "counter-clockwise" if degrees.startswith("+") else "clockwise"
    return f"a {color} {shape} tilted {degrees[1:]} degrees {turn}"


def generate_oriented_trifeature(out_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000,
                                 image_size: int = 32, seed: int = 0, progress: bool = True, format: str = "png",
                                 shard_size: int = 1000) -> Path:
    """Write a ``trifeature-oriented`` image table (attributes ``shape``, ``color``, ``orientation``).

    See :func:`render_oriented_table`. Captions read "a <color> <shape> tilted 11 degrees counter-clockwise"
    (``tilt+11``; ``tilt-11`` is clockwise). Horizontal flips mirror the rotation (counter-clockwise <->
    clockwise): train without them when orientation is to be learnt.
    """
    images, names, split = render_oriented_table(n_train, n_test, image_size, seed, progress)
    captions = [_caption(c, s, o) for s, c, o in zip(names["shape"], names["color"], names["orientation"], strict=True)]
    return write_table(out_dir, images, names, split, captions, progress=progress, format=format,
                       shard_size=shard_size)
