"""Decoding and its cache under careless input: wide/float grey TIFFs, cache file modes, stale temporaries."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mcl.data.table import load_table, write_table
from mcl.data.table.cache import cache_files
from mcl.data.table.decode import decode_image


def test_float_and_32_bit_tiffs_are_not_black_or_white(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    Image.fromarray((ramp * 2e9).astype(np.int32)).save(tmp_path / "i.tif")
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "w.png")
    for name in ("f.tif", "i.tif", "w.png"):
        pixels = decode_image(tmp_path / name, 16)[0][..., 0]
        assert pixels.min() <= 1 and pixels.max() >= 254, name
        assert len(np.unique(pixels)) > 100, name


def test_cache_files_are_readable_by_others(tmp_path: Path) -> None:
    images = np.zeros((3, 8, 8, 3), np.uint8)
    root = write_table(tmp_path / "t", images, {}, ["train"] * 3)
    npy, meta = cache_files(root, 8)
    npy.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    load_table(root, image_size=8, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for path in (npy, meta):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_stale_decode_temporaries_are_removed_live_ones_kept(tmp_path: Path) -> None:
    images = np.zeros((3, 8, 8, 3), np.uint8)
    root = write_table(tmp_path / "t", images, {}, ["train"] * 3)
    npy, meta = cache_files(root, 8)
    npy.unlink(missing_ok=True)  # write_table may have cached the images already: decode them again
    meta.unlink(missing_ok=True)
    npy.parent.mkdir(parents=True, exist_ok=True)
    stale = npy.parent / f".{npy.name}.dead.tmp"
    stale.write_bytes(b"\0" * 4096)
    live = npy.parent / f".{npy.name}.live.tmp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        load_table(root, image_size=8, progress=False)
        assert not stale.exists() and live.exists()
    finally:
        holder.kill()
        holder.wait()
