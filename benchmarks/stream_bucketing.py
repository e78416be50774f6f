"""Stream bucketing: buffer high-water mark vs its bound, samples visited per epoch, images/s by workers.

Writes a generated set of 64-px JPEGs as WebDataset shards (``write_table(format='webdataset')``,
cached under ``--data``), indexes it, and then:

1. **Buffers**: for plain batches (stage 1) and random pseudo-labels with 10 and 100 groups (with and
   without ``max_buffered``), one epoch of :class:`~mcl.data.stream.GroupBucketingStream` (0 workers):
   the bound ``shuffle_buffer + min(groups x batch, cap)``, the planned high-water mark, the reader's
   measured high-water mark (samples and MiB of encoded bytes held), early flushes, and the fraction of
   samples visited exactly once (must be 1.0) with all batches single-group.
2. **Throughput**: images/s of a full epoch (10 groups) through :class:`~mcl.data.stream.StreamLoader`
   with 0, 1 and 2 workers (decode included), beside the random-access path (``ShardDataset`` +
   ``ClusterBatchSampler`` + ``DatasetLoader``, 0 workers).
3. **Reader**: MB/s of reading every image's bytes with our offset reader vs :mod:`tarfile` stream
   mode (what the ``webdataset`` package does internally) and, when it is importable, the ``webdataset``
   package itself, interleaved (images' bytes over seconds; the package also reads the .json members).

    python benchmarks/stream_bucketing.py [--quick] [--n 10000] [--data /tmp/mcl-stream-bench]
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import interleaved, limit_threads, machine, median, parser, table
from PIL import Image

from mcl.data.loader import DatasetLoader
from mcl.data.stream import GroupBucketingStream, StreamLoader
from mcl.data.table import write_table
from mcl.data.webdataset import ShardDataset, ShardIndex, ShardReader, index_shards
from mcl.sampling import ClusterBatchSampler

BATCH = 256
SIZE = 64


def generate(root: Path, n: int) -> Path:
    """Smooth random colour fields with noise (JPEGs of a few KB, like small photos)."""
    if (root / "shard-000000.tar").exists() and len(index_shards(root)) == n:
        return root
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        smooth = np.asarray(Image.fromarray(coarse[i]).resize((SIZE, SIZE), Image.Resampling.BICUBIC), np.int16)
        images[i] = np.clip(smooth + rng.integers(-12, 13, (SIZE, SIZE, 3)), 0, 255)
    split = ["train"] * n
    return write_table(root, images, {"g": [str(i % 10) for i in range(n)]}, split, format="webdataset",
                       shard_size=500, quality=90)


def buffers(index: ShardIndex, ids: np.ndarray) -> list[list[object]]:
    rows = []
    rng = np.random.default_rng(1)
    for name, groups, cap in (("plain (stage 1)", 0, None), ("10 groups", 10, None), ("100 groups", 100, None),
                              ("100 groups, cap 2048", 100, 2048)):
        labels = rng.integers(0, groups, len(ids)) if groups else None
        stream = GroupBucketingStream(index, ids, SIZE, BATCH, labels, seed=0, shuffle_buffer=1024, max_buffered=cap)
        stream.set_epoch(0)
        plan = stream.plan()
        seen = np.zeros(len(ids), dtype=np.int64)
        single = True
        for batch in stream:
            positions = batch["index"].numpy()
            np.add.at(seen, positions, 1)
            single &= labels is None or len(np.unique(labels[positions])) == 1
        visited = f"{(seen == 1).mean():.4f}"  # exactly 1.0000 when every sample was in exactly one batch
        rows.append([name, stream.bound(), plan.high_water, stream.stats.high_water_samples,
                     stream.stats.high_water_bytes / 2**20, plan.early_flushes, len(stream), visited,
                     "yes" if single else "NO"])
    return rows


def throughput(index: ShardIndex, ids: np.ndarray, repeats: int) -> list[list[object]]:
    labels = np.random.default_rng(2).integers(0, 10, len(ids))

    def stream_epoch(workers: int) -> Callable[[], None]:
        def run() -> None:
            loader = StreamLoader(GroupBucketingStream(index, ids, SIZE, BATCH, labels, seed=0), "cpu", workers)
            loader.set_epoch(0)  # planning is part of the epoch's cost
            assert sum(len(batch["index"]) for batch in loader) == len(ids)
        return run

    def random_access() -> None:
        loader = DatasetLoader(ShardDataset(index, ids, SIZE), ClusterBatchSampler(labels, BATCH, seed=0), "cpu")
        loader.set_epoch(0)
        assert sum(len(batch["index"]) for batch in loader) == len(ids)

    candidates = {f"stream, {w} workers": stream_epoch(w) for w in (0, 1, 2)}
    candidates["random access (ShardDataset + ClusterBatchSampler), 0 workers"] = random_access
    seconds = interleaved(candidates, repeats, warmup=0)
    return [[name, len(ids) / median(values), median(values)] for name, values in seconds.items()]


def readers(index: ShardIndex, repeats: int) -> list[list[object]]:
    total = int(index.size.sum())

    def ours() -> None:
        reader = ShardReader(index)
        for sample in range(len(index)):
            reader.read(sample)
        reader.close()

    def tar_stream() -> None:
        for shard in index.shards:
            with tarfile.open(shard, mode="r|") as stream:
                for member in stream:
                    handle = stream.extractfile(member)
                    if handle is not None:
                        handle.read()

    candidates = {"offset reader (ours)": ours, "tarfile stream mode (webdataset's way)": tar_stream}
    try:  # measured when importable (e.g. PYTHONPATH=/path/to/webdataset); not a dependency
        import webdataset

        def package() -> None:
            for _ in webdataset.WebDataset([str(p) for p in index.shards], shardshuffle=False, empty_check=False):
                pass

        candidates[f"webdataset {getattr(webdataset, '__version__', '')} package (all members)"] = package
    except ImportError:
        pass
    seconds = interleaved(candidates, repeats)
    return [[name, total / median(values) / 1e6, median(values)] for name, values in seconds.items()]


def main() -> None:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--n", type=int, default=10_000)
    options.add_argument("--data", type=Path, default=Path("/tmp/mcl-stream-bench"))
    args = options.parse_args()
    limit_threads(args.threads)
    n = 2_000 if args.quick else args.n
    started = time.perf_counter()
    root = generate(args.data / f"n{n}", n)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    index = index_shards(root)
    indexed = time.perf_counter() - started
    ids = index.ids("train")
    print(machine())
    print(f"{n} images of {SIZE} px in {len(index.shards)} shards, {index.size.mean() / 1024:.1f} KiB per JPEG; "
          f"generated in {generated:.1f} s, indexed in {indexed:.2f} s ({n / indexed:,.0f} samples/s); batch {BATCH}")
    print()
    print(table(["batches", "bound (samples)", "plan high-water", "reader high-water", "reader MiB held",
                 "early flushes", "batches/epoch", "fraction visited once", "single-group"], buffers(index, ids)))
    print()
    print(table(["one epoch, 10 groups, decoded to 64 px (median of rounds)", "images/s", "seconds"],
                throughput(index, ids, args.repeats or 2)))
    print()
    print(table(["reading every image's bytes", "MB/s", "seconds"], readers(index, args.repeats or 3)))


if __name__ == "__main__":
    main()
