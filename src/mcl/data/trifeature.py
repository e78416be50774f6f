"""Trifeature: 10 shapes x 10 textures x 10 colours (Hermann & Lampinen, NeurIPS 2020).

A re-implementation for small images (32-64 px) on CPU: each image is one coloured, textured shape on
a grey background at a random rotation (within +-45 degrees, as in the original) and a small random
offset. Texture is a luminance pattern inside the shape (pattern "on" pixels get the full colour,
"off" pixels 40 % of it), so colour stays identifiable whatever the texture. Texture periods scale
with the image size so that all ten textures stay distinguishable at 32 px. :func:`draw_corner_marks`
adds the optional fourth attribute of ``captioned-trifeature-marked``: a small black square in one corner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mcl.data.table import balanced_codes, check_generator_args, split_column, write_table
from mcl.logging_utils import progress_bar

SHAPES = ("triangle", "square", "plus", "circle", "tee", "rhombus", "pentagon", "star", "fivesquare", "trapezoid")
TEXTURES = ("solid", "stripes", "grid", "hexgrid", "dots", "noise", "triangles", "zigzags", "rain", "pluses")
# The colours of the original data set.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "pink": (255, 102, 255),
    "cyan": (0, 255, 255),
    "purple": (77, 0, 128),
    "ocean": (26, 102, 128),
    "orange": (255, 153, 0),
    "white": (255, 255, 255),
}
BACKGROUND = 128
OFF_INTENSITY = 0.33
MAX_ROTATION_DEG = 45.0
# Shape circumradius and the largest centre offset, as fractions of the image size: the shape spans
# 60-85 % of the image and never leaves it.
SHAPE_RADIUS = 0.42
MAX_OFFSET = 0.06
# Base texture period as a fraction of the image size (5.3 px at 32 px).
TEXTURE_PERIOD = 1 / 6
# The optional fourth attribute (captioned-trifeature-marked): a small black square in one corner, 1/8 of the
# image wide, one pixel in from the edges. It is drawn over the image; a shape's tip reaches into a corner box by one
# pixel in about 1 of 400 boxes (measured on 4000 images), so the mark is always whole and hides almost nothing.
MARK_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
MARK_SIZE = 1 / 8
MARK_INTENSITY = 0

_SHAPE_SUPERSAMPLE = 4
_TEXTURE_SUPERSAMPLE = 2
_CHUNK = 256

Polygon = np.ndarray  # (k, 2) vertices, x right, y up


# ---------------------------------------------------------------------------------------------- shapes


def _regular(sides: int, inner: float | None = None) -> list[Polygon]:
    """Regular polygon pointing up; with ``inner`` a star whose inner vertices lie at that radius."""
    points = sides if inner is None else 2 * sides
    angles = np.pi / 2 + 2 * np.pi * np.arange(points) / points
    radii = np.ones(points) if inner is None else np.where(np.arange(points) % 2 == 0, 1.0, inner)
    return [np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)]


def _rects(*boxes: tuple[float, float, float, float]) -> list[Polygon]:
    return [np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float) for x0, y0, x1, y1 in boxes]


def _normalised(polygons: list[Polygon]) -> list[Polygon]:
    # Centre on the bounding box and scale to circumradius 1, so that no rotation leaves the image.
    vertices = np.concatenate(polygons)
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    radius = np.linalg.norm(vertices - centre, axis=1).max()
    return [(polygon - centre) / radius for polygon in polygons]


_ARM = 0.36  # half-width of the bars of plus and tee
_THIRD = 1 / 3
_SHAPE_POLYGONS: dict[str, list[Polygon]] = {
    name: _normalised(polygons)
    for name, polygons in {
        "triangle": _regular(3),
        "square": _rects((-1, -1, 1, 1)),
        "plus": _rects((-1, -_ARM, 1, _ARM), (-_ARM, -1, _ARM, 1)),
        "circle": _regular(64),
        "tee": _rects((-1, 1 - 2 * _ARM, 1, 1), (-_ARM, -1, _ARM, 1)),
        "rhombus": [np.array([(0.0, 1.0), (0.55, 0.0), (0.0, -1.0), (-0.55, 0.0)])],
        "pentagon": _regular(5),
        "star": _regular(5, inner=0.45),
        "fivesquare": _rects(
            (-1, -1, -_THIRD, -_THIRD),
            (_THIRD, -1, 1, -_THIRD),
            (-_THIRD, -_THIRD, _THIRD, _THIRD),
            (-1, _THIRD, -_THIRD, 1),
            (_THIRD, _THIRD, 1, 1),
        ),
        "trapezoid": [np.array([(-1.0, -0.6), (1.0, -0.6), (0.45, 0.6), (-0.45, 0.6)])],
    }.items()
}


def _shape_masks(shapes: np.ndarray, angles: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """Antialiased float32 masks ``(B, size, size)`` in [0, 1]: polygons drawn at 4x, then box-filtered."""
    big = size * _SHAPE_SUPERSAMPLE
    masks = np.empty((len(shapes), size, size), dtype=np.uint8)
    for i, (shape, angle, centre) in enumerate(zip(shapes, angles, centres, strict=True)):
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        canvas = Image.new("L", (big, big))
        draw = ImageDraw.Draw(canvas)
        for polygon in _SHAPE_POLYGONS[SHAPES[shape]]:
            # y up -> image rows down; -0.5 because Pillow puts pixel centres on integer coordinates.
            points = (polygon @ rotation) * np.array([1.0, -1.0]) * SHAPE_RADIUS + centre
            draw.polygon([tuple(p) for p in points * big - 0.5], fill=255)
        masks[i] = np.asarray(canvas.reduce(_SHAPE_SUPERSAMPLE))
    return masks.astype(np.float32) / 255.0


def _downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter ``(B, H, W)`` by ``factor``; strided sums are much faster than a reshaped mean."""
    total = sum(images[:, i::factor, j::factor] for i in range(factor) for j in range(factor))
    return (total / factor**2).astype(np.float32)


# ---------------------------------------------------------------------------------------------- textures
# A pattern maps texture coordinates (u, v), in units of its period, and a per-image seed to "on" pixels.

Pattern = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _hash01(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) per integer cell (i, j) and seed."""
    h = (i.astype(np.int64) * 0x9E3779B1 + j.astype(np.int64) * 0x85EBCA77).astype(np.uint32) ^ seed
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h ^= h >> np.uint32(shift)
        h *= np.uint32(multiplier)
    h ^= h >> np.uint32(16)
    return h.astype(np.float32) / np.float32(2**32)


def _solid(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return np.ones(u.shape, dtype=bool)


def _stripes(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return _frac(v) < 0.5


def _grid(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return (_frac(u) < 0.3) | (_frac(v) < 0.3)


def _hexgrid(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    # Honeycomb = boundaries of the Voronoi cells of a triangular lattice: pixels almost as close to
    # their second-nearest lattice point as to their nearest. Both are corners of the lattice rhombus.
    t = v / (np.sqrt(3) / 2)
    s = u - t / 2
    fs, ft = _frac(s), _frac(t)
    distances = np.stack(
        [np.hypot(fs - di + (ft - dj) / 2, (ft - dj) * np.sqrt(3) / 2) for di in (0, 1) for dj in (0, 1)]
    )
    distances.sort(axis=0)
    return distances[1] - distances[0] < 0.22


def _dots(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return (_frac(u) - 0.5) ** 2 + (_frac(v) - 0.5) ** 2 < 0.32**2


def _noise(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return _hash01(np.floor(u * 3), np.floor(v * 3), seed) < 0.5


def _triangles(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    fu, fv = _frac(u), _frac(v)
    return (fv > 0.1) & (fv < 0.9) & (np.abs(fu - 0.5) < (fv - 0.1) * 0.55)


def _zigzags(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return _frac(v + np.abs(_frac(u) - 0.5)) < 0.45


def _rain(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    # Short vertical dashes in narrow columns, each column at its own random height.
    column = np.floor(u / 0.6)
    offset = _hash01(column, np.zeros_like(column), seed)
    return (np.abs(_frac(u / 0.6) - 0.5) < 0.25) & (_frac(v + offset) < 0.55)


def _pluses(u: np.ndarray, v: np.ndarray, seed: np.ndarray) -> np.ndarray:
    du, dv = np.abs(_frac(u) - 0.5), np.abs(_frac(v) - 0.5)
    return ((du < 0.13) & (dv < 0.4)) | ((dv < 0.13) & (du < 0.4))


# name -> (pattern, period as a multiple of TEXTURE_PERIOD)
_PATTERNS: dict[str, tuple[Pattern, float]] = {
    "solid": (_solid, 1.0),
    "stripes": (_stripes, 1.0),
    "grid": (_grid, 1.2),
    "hexgrid": (_hexgrid, 1.5),
    "dots": (_dots, 1.1),
    "noise": (_noise, 1.0),
    "triangles": (_triangles, 1.4),
    "zigzags": (_zigzags, 1.2),
    "rain": (_rain, 1.3),
    "pluses": (_pluses, 1.4),
}


def _texture_maps(
    textures: np.ndarray, angles: np.ndarray, phases: np.ndarray, seeds: np.ndarray, size: int
) -> np.ndarray:
    """Antialiased float32 pattern maps ``(B, size, size)`` in [0, 1] (1 = "on")."""
    out = np.empty((len(textures), size, size), dtype=np.float32)
    axis = (
        (np.arange(size * _TEXTURE_SUPERSAMPLE, dtype=np.float32) + 0.5) / _TEXTURE_SUPERSAMPLE
    ) - size / 2
    y, x = axis[None, :, None], axis[None, None, :]
    for texture in np.unique(textures):
        rows = np.flatnonzero(textures == texture)
        pattern, factor = _PATTERNS[TEXTURES[texture]]
        period = np.float32(size * TEXTURE_PERIOD * factor)
        cos = np.cos(angles[rows]).astype(np.float32)[:, None, None]
        sin = np.sin(angles[rows]).astype(np.float32)[:, None, None]
        u = (x * cos + y * sin) / period + phases[rows, 0, None, None]
        v = (y * cos - x * sin) / period + phases[rows, 1, None, None]
        on = pattern(u, v, seeds[rows, None, None])
        out[rows] = _downsample(on.astype(np.float32), _TEXTURE_SUPERSAMPLE)
    return out


# ---------------------------------------------------------------------------------------------- images


@dataclass
class Scenes:
    """Everything random about a batch of images (attribute codes and poses), drawn up front."""

    shape: np.ndarray
    texture: np.ndarray
    color: np.ndarray
    shape_angle: np.ndarray
    centre: np.ndarray
    texture_angle: np.ndarray
    texture_phase: np.ndarray
    texture_seed: np.ndarray

    def chunk(self, rows: slice) -> Scenes:
        return Scenes(**{name: value[rows] for name, value in vars(self).items()})


def sample_poses(rng: np.random.Generator, shape: np.ndarray, texture: np.ndarray, color: np.ndarray) -> Scenes:
    """Random poses for the attribute codes ``(N,)``: rotations within +-MAX_ROTATION_DEG, offsets, texture phases."""
    n = len(shape)
    max_angle = np.deg2rad(MAX_ROTATION_DEG)
    return Scenes(
        shape=shape,
        texture=texture,
        color=color,
        shape_angle=rng.uniform(-max_angle, max_angle, n),
        centre=0.5 + rng.uniform(-MAX_OFFSET, MAX_OFFSET, (n, 2)),
        texture_angle=rng.uniform(-max_angle, max_angle, n),
        texture_phase=rng.uniform(0, 1, (n, 2)).astype(np.float32),
        texture_seed=rng.integers(0, 2**32, n, dtype=np.uint32),
    )


_COLOR_TABLE = np.array(list(COLORS.values()), dtype=np.float32)


def _render_chunk(scenes: Scenes, size: int) -> np.ndarray:
    mask = _shape_masks(scenes.shape, scenes.shape_angle, scenes.centre, size)[..., None]
    pattern = _texture_maps(
        scenes.texture, scenes.texture_angle, scenes.texture_phase, scenes.texture_seed, size
    )
    intensity = (OFF_INTENSITY + (1 - OFF_INTENSITY) * pattern)[..., None]
    colour = _COLOR_TABLE[scenes.color][:, None, None, :]
    image = mask * intensity * colour + (1 - mask) * BACKGROUND
    return np.rint(image).astype(np.uint8)


def render_scenes(scenes: Scenes, size: int, progress: bool = False) -> np.ndarray:
    """uint8 images ``(N, size, size, 3)`` of ``scenes``; ``shape_angle`` > 0 turns a shape counter-clockwise."""
    n = len(scenes.shape)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    # A bar (on a terminal only) over chunks of _CHUNK images.
    for start in progress_bar(range(0, n, _CHUNK), f"rendering trifeature ({n} images)", progress):
        rows = slice(start, min(n, start + _CHUNK))
        images[rows] = _render_chunk(scenes.chunk(rows), size)
    return images


def draw_corner_marks(images: np.ndarray, corners: Sequence[str]) -> np.ndarray:
    """Copies of uint8 ``images`` ``(N, S, S, 3)`` with a black square in the named corner of each (MARK_CORNERS).

    The square is ``max(2, round(S * MARK_SIZE))`` px wide, one pixel from both edges: a small, easily missed
    mark whose position an image model's pooled features barely encode (the aligned stage 0's weak attribute).
    """
    codes = _codes(corners, MARK_CORNERS, "mark corners")
    size = images.shape[1]
    side = max(2, round(size * MARK_SIZE))
    near, far = 1, size - 1 - side
    out = images.copy()
    for image, code in zip(out, codes, strict=True):
        top = near if code < 2 else far
        left = near if code % 2 == 0 else far
        image[top:top + side, left:left + side] = MARK_INTENSITY
    return out


def _codes(names: Sequence[str], vocabulary: Sequence[str], kind: str) -> np.ndarray:
    unknown = sorted(set(names) - set(vocabulary))
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; expected one of {list(vocabulary)}")
    return np.array([vocabulary.index(name) for name in names], dtype=np.int64)


def render_trifeature(
    shapes: Sequence[str], textures: Sequence[str], colors: Sequence[str], image_size: int = 32, seed: int = 0
) -> np.ndarray:
    """Render one image per (shape, texture, colour) triple as uint8 ``(N, S, S, 3)`` at random poses."""
    codes = [
        _codes(*args)
        for args in (
            (shapes, SHAPES, "shapes"),
            (textures, TEXTURES, "textures"),
            (colors, tuple(COLORS), "colors"),
        )
    ]
    scenes = sample_poses(np.random.default_rng(seed), *codes)
    return render_scenes(scenes, image_size)


def render_trifeature_table(
    n_train: int, n_test: int, image_size: int, seed: int, progress: bool = False
) -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """Images, attribute columns (``shape``, ``texture``, ``color``) and split of a Trifeature table.

    Each attribute is drawn independently of the others and balanced within each split; everything
    is determined by ``seed``. What :func:`~mcl.data.table.write_table` needs, less the captions.
    """
    check_generator_args(n_train, n_test, image_size)
    rng = np.random.default_rng(seed)
    shape, texture, color = (balanced_codes(rng, n_train, n_test, 10) for _ in range(3))
    images = render_scenes(sample_poses(rng, shape, texture, color), image_size, progress)
    names = {
        "shape": [SHAPES[i] for i in shape],
        "texture": [TEXTURES[i] for i in texture],
        "color": [list(COLORS)[i] for i in color],
    }
    return images, names, split_column(n_train, n_test)


def generate_trifeature(
    out_dir: str | os.PathLike,
    n_train: int = 4000,
    n_test: int = 1000,
    image_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    format: str = "png",
    shard_size: int = 1000,
) -> Path:
    """Write a Trifeature image table (attributes ``shape``, ``texture``, ``color``) and return its directory.

    ``format``: ``png`` (default), ``jpeg`` or ``webdataset`` (tar shards of ``shard_size`` samples).

    Each attribute is drawn independently of the others and balanced within each split. The output
    is fully determined by ``seed``. Captions read "a <color> <shape> with <texture> texture".
    """
    images, names, split = render_trifeature_table(n_train, n_test, image_size, seed, progress)
    captions = [
        f"a {c} {s} with {t} texture"
        for s, t, c in zip(names["shape"], names["texture"], names["color"], strict=True)
    ]
    return write_table(out_dir, images, names, split, captions, progress=progress, format=format,
                       shard_size=shard_size)
