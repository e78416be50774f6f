"""The registry of synthetic data-set generators: name -> function that writes an image table.

Each generator is imported when first used (``GENERATORS["trifeature"]`` imports
:mod:`mcl.data.trifeature` only then), so listing the names costs nothing.

Example:
    >>> GENERATOR_NAMES[:2]
    ('trifeature', 'overlay')
    >>> GENERATORS["trifeature"]("data/", n_train=100, n_test=20, image_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# generator name -> "module:function"; each writes an image table (see mcl.data.table.write_table).
_GENERATORS = {
    "trifeature": "mcl.data.trifeature:generate_trifeature",
    "overlay": "mcl.data.overlay:generate_overlay",
    "trifeature-oriented": "mcl.data.trifeature_oriented:generate_oriented_trifeature",
    "captioned-trifeature": "mcl.data.captions:generate_captioned_trifeature",
    "captioned-fashion-mnist": "mcl.data.captions:generate_captioned_fashion_mnist",
    "captioned-trifeature-marked": "mcl.data.captions:generate_marked_trifeature",
}
GENERATOR_NAMES = tuple(_GENERATORS)


def generator(name: str) -> Callable[..., Any]:
    """The data-set generator registered as ``name`` (one of :data:`GENERATOR_NAMES`)."""
    module, function = _GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), function)


class _Generators(Mapping):
    """``GENERATORS[name]`` -> the generator function, imported on first use."""

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in _GENERATORS:
            raise KeyError(name)
        return generator(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_GENERATORS)

    def __len__(self) -> int:
        return len(_GENERATORS)


GENERATORS: Mapping[str, Callable[..., Any]] = _Generators()


