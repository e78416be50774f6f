"""Data: image tables (the one input format), loaders, and the synthetic data sets written as tables.

Submodules are imported when first used (``import mcl.data.loader`` does not load the generators).
"""

from __future__ import annotations

import importlib
from typing import Any

from mcl.data.generators import GENERATOR_NAMES, GENERATORS, generator

_EXPORTS = {
    "ImageTable": "mcl.data.table", "load_table": "mcl.data.sources", "write_table": "mcl.data.table",
    "generate_trifeature": "mcl.data.trifeature", "generate_overlay": "mcl.data.overlay",
    "generate_captioned_trifeature": "mcl.data.captions", "generate_captioned_fashion_mnist": "mcl.data.captions",
    "open_source": "mcl.data.sources", "load_folder": "mcl.data.folder", "source_digest": "mcl.data.sources",
}
def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mcl.data' has no attribute {name!r}")


__all__ = ["GENERATORS", "GENERATOR_NAMES", "ImageTable", "generate_captioned_fashion_mnist",
           "generate_captioned_trifeature", "generate_overlay", "generate_trifeature", "generator", "load_folder",
           "load_table", "open_source", "source_digest", "write_table"]
