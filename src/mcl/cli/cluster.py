"""``mcl cluster``: one MCL clustering stage on embeddings from any model, with no config or run directory.

    mcl cluster --embeddings stage1.npy --clusters 10 --out c1
    mcl cluster --embeddings stage2.npy --clusters 10 --previous c1 --out c2

reads ``(N, D)`` float embeddings (a ``.npy`` file, loaded without pickle), clusters them with
:func:`mcl.pseudolabels.cluster_stage` and writes, each file atomically, into ``--out``:

- ``cluster_labels.npy`` ``(N,)`` int64 and ``centroids.npy`` ``(K, D)`` float32: this stage's k-means;
- ``pseudo_labels.npy`` ``(N,)`` int64: the next stage's pseudo-labels, i.e. this stage's clusters
  combined with those of every stage in ``--previous`` (the ``--out`` of an earlier ``mcl cluster``),
  groups smaller than ``--min-group-size`` merged into their nearest group (:class:`PseudoLabeller`);
- ``stages.safetensors``: every stage's ``labels_<s>`` and ``centroids_<s>`` (s = 1..S), what the
  next ``--previous`` needs; ``cluster.json``: sizes, inertia, the merge summary, the arguments.
"""

from __future__ import annotations

import argparse
from io import BytesIO
from pathlib import Path

import numpy as np

from mcl.errors import ConfigError, DataError, one_line
from mcl.files import load_arrays, save_arrays, write_bytes, write_json
from mcl.pseudolabels import PseudoLabeller, cluster_stage

STAGES_FILE = "stages.safetensors"
_MAX_ABS = 1e15  # |value| above this overflows float32 squared distances in any realistic dimension
SUMMARY_FILE = "cluster.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl cluster`` on the CLI's subparsers (its handler is :func:`run`, as ``func``)."""
    from mcl.config import MCLConfig

    defaults = MCLConfig()
    text = "cluster one stage's embeddings (N, D .npy) and write the next stage's pseudo-labels"
    parser = subparsers.add_parser("cluster", help=text, description=text)
    parser.add_argument("--embeddings", required=True, metavar="X.npy", help="(N, D) float array, .npy")
    parser.add_argument("--previous", metavar="DIR", help="--out of the previous stage's `mcl cluster`")
    parser.add_argument("--clusters", type=int, required=True, metavar="K", help="k-means clusters")
    parser.add_argument("--min-group-size", type=int, default=defaults.min_group_size, metavar="M",
                        help="merge smaller pseudo-label groups into the nearest one "
                             f"(default {defaults.min_group_size})")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    parser.add_argument("--restarts", type=int, default=defaults.kmeans_restarts,
                        help=f"k-means++ restarts (default {defaults.kmeans_restarts})")
    parser.add_argument("--iterations", type=int, default=defaults.kmeans_iterations,
                        help=f"cap on Lloyd iterations (default {defaults.kmeans_iterations})")
    parser.add_argument("--spherical", action="store_true", help="cosine k-means (unit-norm centroids)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    parser.set_defaults(func=run)


def load_embeddings(path: str | Path) -> np.ndarray:
    """An ``(N, D)`` finite float ``.npy`` array as float32; anything else is a one-line :class:`DataError`."""
    try:
        # Memory-mapped first: a header claiming more data than the file holds fails here, allocating nothing.
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, OverflowError, TypeError, MemoryError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({one_line(exc) or type(exc).__name__})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise DataError(f"{path}: an .npz archive; expected a single (N, D) .npy array")
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(f"{path}: shape {array.shape}; expected a non-empty 2-D (N, D) array")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: dtype {array.dtype}; expected floats (float16, float32 or float64)")
    # Checked after the cast: float64 values beyond float32's range (1e300) would become inf centroids, and
    # values near it overflow the squared distances k-means computes.
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        array = np.array(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1) & (np.abs(array) <= _MAX_ABS).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: row {int(np.argmin(finite))} holds NaN, Inf or a value beyond +-{_MAX_ABS:g}; "
                        "expected finite embeddings of moderate size")
    return array


def load_stages(directory: str | Path, min_group_size: int) -> PseudoLabeller:
    """The stages an earlier ``mcl cluster`` recorded in ``directory``, as a :class:`PseudoLabeller`."""
    path = Path(directory) / STAGES_FILE
    if not path.exists():
        raise DataError(f"{path}: file not found; --previous must be the --out directory of an earlier `mcl cluster`")
    arrays = load_arrays(path)
    labeller = PseudoLabeller(min_group_size)
    stage = 1
    while f"labels_{stage}" in arrays and f"centroids_{stage}" in arrays:
        try:
            labeller.record_stage(arrays[f"labels_{stage}"], arrays[f"centroids_{stage}"])
        except ValueError as exc:
            raise DataError(f"{path}: stage {stage}: {one_line(exc)}") from None
        stage += 1
    if labeller.num_stages == 0 or len(arrays) != 2 * labeller.num_stages:
        raise DataError(f"{path}: expected arrays labels_s and centroids_s for s = 1..S, got {sorted(arrays)}")
    return labeller


def _write_npy(path: Path, array: np.ndarray) -> None:
    buffer = BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def _check_arguments(args: argparse.Namespace) -> None:
    from mcl.config.schema import MAX_SEED

    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"mcl cluster --seed: expected an integer in [0, {MAX_SEED}], got {args.seed}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"mcl cluster --out {out}: a file; expected a directory (created if missing)")
    for name, value, low in (("--clusters", args.clusters, 2), ("--min-group-size", args.min_group_size, 1),
                             ("--restarts", args.restarts, 1), ("--iterations", args.iterations, 1)):
        if value < low:
            raise ConfigError(f"mcl cluster {name}: expected an integer >= {low}, got {value}")


def run(args: argparse.Namespace) -> None:
    """Cluster ``args.embeddings``, combine with ``args.previous``'s stages, write everything to ``args.out``."""
    _check_arguments(args)
    embeddings = load_embeddings(args.embeddings)
    labeller = PseudoLabeller(args.min_group_size)
    if args.previous is not None:
        labeller = load_stages(args.previous, args.min_group_size)
        if labeller.num_samples != len(embeddings):
            raise DataError(f"{args.embeddings}: {len(embeddings)} rows, but --previous {args.previous} clustered "
                            f"{labeller.num_samples} samples; every stage must embed the same samples, same order")
    if args.clusters > len(embeddings):
        raise DataError(f"{args.embeddings}: {len(embeddings)} rows, fewer than --clusters {args.clusters}")
    result = cluster_stage(embeddings, args.clusters, args.seed, restarts=args.restarts, iterations=args.iterations,
                           spherical=args.spherical)
    pseudo_labels = labeller.add_stage(result.labels, result.centroids)
    out = Path(args.out)
    _write_npy(out / "cluster_labels.npy", result.labels.astype(np.int64))
    _write_npy(out / "centroids.npy", result.centroids.astype(np.float32))
    _write_npy(out / "pseudo_labels.npy", pseudo_labels.astype(np.int64))
    stages = {}
    for stage, (labels, centroids) in enumerate(zip(labeller.stage_labels, labeller.stage_centroids,
                                                    strict=True), start=1):
        stages[f"labels_{stage}"], stages[f"centroids_{stage}"] = labels, centroids
    save_arrays(out / STAGES_FILE, stages)
    write_json(out / SUMMARY_FILE, {
        "stage": labeller.num_stages, "num_samples": len(embeddings), "clusters": args.clusters,
        "cluster_sizes": result.sizes.tolist(), "inertia": result.inertia, "iterations": result.iterations,
        "backend": result.backend, "seed": args.seed, "min_group_size": args.min_group_size,
        "embeddings": str(args.embeddings), "previous": None if args.previous is None else str(args.previous),
        "pseudo_labels": labeller.info})
    info = labeller.info
    print(f"stage {labeller.num_stages}: {len(embeddings)} samples in {args.clusters} clusters; "
          f"{info['groups']} pseudo-label groups ({info['groups_merged']} of {info['groups_before_merge']} merged) "
          f"-> {out}")
