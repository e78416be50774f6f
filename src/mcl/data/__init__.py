"""Data: image tables (the one input format), loaders, and the synthetic data sets written as tables.

Submodules are imported when first used (``import mcl.data.loader`` does not load the generators).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# generator name -> "module:function"; each writes an image table (see mcl.data.table.write_table).
_GENERATORS = {
    "trifeature": "mcl.data.trifeature:generate_trifeature",
    "overlay": "mcl.data.overlay:generate_overlay",
    "captioned-trifeature": "mcl.data.captions:generate_captioned_trifeature",
    "captioned-fashion-mnist": "mcl.data.captions:generate_captioned_fashion_mnist",
    "captioned-trifeature-marked": "mcl.data.captions:generate_marked_trifeature",
}
_EXPORTS = {
    "ImageTable": "mcl.data.table", "load_table": "mcl.data.table", "write_table": "mcl.data.table",
    "generate_trifeature": "mcl.data.trifeature", "generate_overlay": "mcl.data.overlay",
    "generate_captioned_trifeature": "mcl.data.captions", "generate_captioned_fashion_mnist": "mcl.data.captions",
    "open_source": "mcl.data.sources", "load_folder": "mcl.data.folder", "source_digest": "mcl.data.sources",
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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mcl.data' has no attribute {name!r}")


__all__ = ["GENERATORS", "GENERATOR_NAMES", "ImageTable", "generate_captioned_fashion_mnist",
           "generate_captioned_trifeature", "generate_overlay", "generate_trifeature", "generator", "load_folder",
           "load_table", "open_source", "source_digest", "write_table"]
