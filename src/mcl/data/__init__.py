"""Data: image tables (the one input format) and the synthetic data sets that are written as one."""

from mcl.data.captions import generate_captioned_fashion_mnist, generate_captioned_trifeature
from mcl.data.overlay import generate_overlay
from mcl.data.table import ImageTable, load_table, write_table
from mcl.data.trifeature import generate_trifeature

GENERATORS = {
    "trifeature": generate_trifeature,
    "overlay": generate_overlay,
    "captioned-trifeature": generate_captioned_trifeature,
    "captioned-fashion-mnist": generate_captioned_fashion_mnist,
}

__all__ = ["GENERATORS", "ImageTable", "generate_captioned_fashion_mnist", "generate_captioned_trifeature",
           "generate_overlay", "generate_trifeature", "load_table", "write_table"]
