"""Data: image tables (the one input format) and the synthetic data sets that are written as one."""

from mcl.data.overlay import generate_overlay
from mcl.data.table import ImageTable, load_table, write_table
from mcl.data.trifeature import generate_trifeature

GENERATORS = {"trifeature": generate_trifeature, "overlay": generate_overlay}

__all__ = ["GENERATORS", "ImageTable", "generate_overlay", "generate_trifeature", "load_table", "write_table"]
