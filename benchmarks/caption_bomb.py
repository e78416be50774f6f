"""Peak RSS of indexing a WebDataset shard whose one ``.txt`` member is a decompression bomb.

Writes (streaming, never holding it) a gzip shard with one ``KEY.txt`` of ``--gib`` GiB of one repeated
byte (about 1 MB compressed per GiB), then indexes it in a fresh process with the mcl found on
``--src`` (default: this checkout's ``src``; point it at an older checkout to compare) and prints that
process's peak RSS (``ru_maxrss``) and whether indexing refused the member (``data.max_text_bytes``).

    python benchmarks/caption_bomb.py [--gib 1] [--src /path/to/old/src] [--shard /tmp/bomb.tar.gz]
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

INDEX = """
import resource, sys, time
from mcl.data.webdataset import index_shards
from mcl.errors import DataError
started = time.perf_counter()
try:
    index_shards(sys.argv[1])
    outcome = "indexed (member read whole)"
except DataError as exc:
    outcome = "refused: " + str(exc)[-120:]
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, "
      f"{time.perf_counter() - started:.1f} s, {outcome}")
"""


def write_bomb(path: Path, size: int) -> None:
    """A gzip tar shard: one image-less ``k0.txt`` of ``size`` bytes, then the end-of-archive blocks."""
    with gzip.open(path, "wb", compresslevel=6) as raw:
        info = tarfile.TarInfo("k0.txt")
        info.size = size
        raw.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        chunk = b"a" * (1 << 20)
        for _ in range(size // len(chunk)):
            raw.write(chunk)
        raw.write(bytes(-size % 512 + 1024))


def main() -> None:
    """Write the shard once, index it in a subprocess, print the figure."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--gib", type=float, default=1.0)
    args.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    args.add_argument("--shard", default="/tmp/mcl-caption-bomb.tar.gz")
    options = args.parse_args()
    shard, size = Path(options.shard), int(options.gib * (1 << 30)) // (1 << 20) * (1 << 20)
    if not shard.exists():
        write_bomb(shard, size)
    print(f"{shard}: {shard.stat().st_size / 1e6:.1f} MB compressed, caption {size / (1 << 30):.2f} GiB")
    subprocess.run([sys.executable, "-c", INDEX, str(shard)], env={"PYTHONPATH": options.src}, check=True)


if __name__ == "__main__":
    main()
