"""k-means: mcl's backends vs scikit-learn's MiniBatchKMeans (the reference code's choice) and KMeans.

L2-normalised 128-d points (a mixture of 64 Gaussian clusters, normalised, like embeddings; or
uniform directions), K = 10 and 100: 100k points of both kinds, 1M clustered points with K = 10
(and K = 100 with ``--full``). Each method runs with its defaults:

- ``mcl-torch`` / ``mcl-faiss``: ``mcl.clustering.kmeans`` with mcl's config defaults
  (``mcl.kmeans_restarts: 5``, ``mcl.kmeans_iterations: 100``); above ``default_sample_size(K)``
  points (``max(64 K, 8192)``) ``mcl-torch`` fits a seeded sample, then makes one chunked pass over all points;
- ``mcl-full``: the torch backend fitting every point (``sample_size=N``): the behaviour before sampling,
  side by side with ``mcl-torch`` (``--no-full`` leaves it out);
- ``mcl-<rev>`` (``--baseline REV``): ``kmeans`` of ``mcl.clustering`` as committed at git revision
  ``REV`` (e.g. ``HEAD``), loaded in isolation: before/after a change, in one run;
- ``sk-minibatch``: ``MiniBatchKMeans(K)`` (batch 1024, k-means++, early stopping);
- ``sk-kmeans``: ``KMeans(K)`` (k-means++, one run, ``max_iter`` 300; at 1M points capped at
  ``--max-iter-1m``, default 30, to bound the runtime).

After one untimed warm-up of every method on 5k points, timed rounds interleave the methods
(2 rounds at 100k, 1 at 1M; every method is deterministic for its seed, so the inertia is that of
any round); the table shows median seconds and the ratios
``speedup = t(scikit-learn) / t(mcl)`` and ``inertia ratio = inertia(mcl) / inertia(scikit-learn)``
(<= 1 is equal or better).

    python benchmarks/clustering.py [--quick | --full] [--device cuda] [--threads 2] [--sklearn minibatch]
        [--no-full] [--baseline HEAD] [--sizes 100000] [--clusters 100] [--data clustered]
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
from _common import interleaved, limit_threads, machine, median, parser, table

DIM = 128


def points(n: int, kind: str, seed: int = 0) -> np.ndarray:
    """``n`` L2-normalised points: a normalised Gaussian mixture or uniform directions."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, DIM), dtype=np.float32)
    if kind == "clustered":
        centres = rng.standard_normal((64, DIM), dtype=np.float32)
        data += centres[rng.integers(0, 64, n)]
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def baseline_module(revision: str) -> ModuleType:
    """``mcl.clustering`` as committed at git ``revision``, imported in isolation (it needs only numpy and torch).

    ``src/mcl`` at that revision is unpacked to a temporary directory and imported with the current ``mcl``
    modules set aside, then put back: the returned module (a single file or a package, whichever the revision
    has) keeps running the old code.
    """
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", revision, "src/mcl"],
                             check=True, capture_output=True).stdout
    target = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))

    def ours() -> list[str]:
        return [name for name in sys.modules if name == "mcl" or name.startswith("mcl.")]

    current = {name: sys.modules.pop(name) for name in ours()}
    sys.path.insert(0, str(target / "src"))
    try:
        return importlib.import_module("mcl.clustering")
    finally:
        sys.path.remove(str(target / "src"))
        for name in ours():
            del sys.modules[name]
        sys.modules.update(current)


def methods(data: np.ndarray, k: int, device: str, max_iter: int, full: bool = True,
            sklearn: str = "both", baseline: tuple[str, ModuleType] | None = None) -> dict[str, Callable[[], float]]:
    """name -> zero-argument callable that clusters ``data`` and returns the inertia."""
    import torch
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from mcl.clustering import faiss_available, kmeans
    from mcl.config import MCLConfig

    defaults = MCLConfig()
    on_device = torch.from_numpy(data).to(device)

    def ours(backend: str, sample_size: int | None = None, function: Callable = kmeans) -> Callable[[], float]:
        return lambda: function(on_device if backend == "torch" else data, k, restarts=defaults.kmeans_restarts,
                              iterations=defaults.kmeans_iterations, seed=0, backend=backend,
                              device=device, sample_size=sample_size).inertia

    candidates = {"mcl-torch": ours("torch"), "mcl-full": ours("torch", len(data)), "mcl-faiss": ours("faiss")}
    if baseline is not None:
        candidates[f"mcl-{baseline[0]}"] = ours("torch", function=baseline[1].kmeans)
    if not full:
        del candidates["mcl-full"]
    if not faiss_available():
        del candidates["mcl-faiss"]
    candidates["sk-minibatch"] = lambda: MiniBatchKMeans(k, random_state=0).fit(data).inertia_
    if sklearn == "both":
        candidates["sk-kmeans"] = lambda: KMeans(k, random_state=0, max_iter=max_iter).fit(data).inertia_
    return candidates


def run_case(n: int, k: int, kind: str, device: str, repeats: int, max_iter: int, full: bool = True,
             sklearn: str = "both", baseline: tuple[str, ModuleType] | None = None) -> list[list[object]]:
    """Time all methods on one data set; one table row per (mcl backend, scikit-learn method) pair."""
    candidates = methods(points(n, kind), k, device, max_iter, full, sklearn, baseline)
    inertia: dict[str, float] = {}

    def recording(name: str, function: Callable[[], float]) -> Callable[[], None]:
        return lambda: inertia.__setitem__(name, float(function()))

    timed = {name: recording(name, function) for name, function in candidates.items()}
    seconds = {name: median(values) for name, values in interleaved(timed, repeats, device, 0).items()}
    ours = [name for name in candidates if name.startswith("mcl")]
    theirs = [name for name in candidates if name.startswith("sk")]
    return [[f"{n:,}", k, kind, mine, other, seconds[mine], seconds[other], seconds[other] / seconds[mine],
             inertia[mine] / inertia[other]] for mine in ours for other in theirs]


def main() -> None:
    """Print the comparison table."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--data", choices=["clustered", "uniform", "both"], default="both",
                         help="point distribution (default: both at 100k, clustered at 1M)")
    options.add_argument("--full", action="store_true", help="also 1M points with K=100 (about 3 more minutes)")
    options.add_argument("--max-iter-1m", type=int, default=30, help="KMeans max_iter at 1M points (default 30)")
    options.add_argument("--sklearn", choices=["both", "minibatch"], default="both",
                         help="scikit-learn methods: MiniBatchKMeans and KMeans (default), or MiniBatchKMeans only")
    options.add_argument("--no-full", action="store_true", help="leave out mcl-full (the unsampled torch fit)")
    options.add_argument("--baseline", metavar="REV", help="also time mcl.clustering at git revision REV")
    options.add_argument("--sizes", type=int, nargs="+", help="only these N (default 100k and 1M; --quick 20k, 100k)")
    options.add_argument("--clusters", type=int, nargs="+", default=[10, 100], help="K values (default 10 100)")
    args = options.parse_args()
    limit_threads(args.threads)
    print(f"# clustering benchmark: {machine()}; {args.threads} threads")
    sizes = args.sizes or ([20_000, 100_000] if args.quick else [100_000, 1_000_000])
    baseline = (args.baseline, baseline_module(args.baseline)) if args.baseline else None
    kinds = ["clustered", "uniform"] if args.data == "both" else [args.data]
    for function in methods(points(5000, "clustered"), 10, args.device, 300, not args.no_full, args.sklearn,
                            baseline).values():
        function()  # load libraries and kernels before anything is timed
    rows = []
    for n in sizes:
        large = n >= 1_000_000
        for k in args.clusters:
            if large and k == 100 and not args.full:
                continue
            for kind in kinds[:1] if large and args.data == "both" else kinds:
                repeats = args.repeats or (1 if large else 2)
                new = run_case(n, k, kind, args.device, repeats, args.max_iter_1m if large else 300,
                               not args.no_full, args.sklearn, baseline)
                rows += new
                print(table(HEADER, new, with_header=False), flush=True)
    print()
    print(table(HEADER, rows))


HEADER = ["N", "K", "data", "ours", "scikit-learn", "ours s", "sklearn s", "speedup", "inertia ratio"]

if __name__ == "__main__":
    main()
