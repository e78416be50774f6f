"""k-means for MCL's per-stage clustering: :func:`kmeans` and its result, :class:`KMeansResult`.

Two backends:

- ``torch`` (default; ``auto`` takes it): up to ``sample_size`` points (by default
  :func:`default_sample_size`, ``max(64 K, 8192)``), the coarse-to-fine in-memory fit of
  :mod:`mcl.clustering.lloyd`: greedy k-means++ and Lloyd restarts on a ``max(32 K, 4096)``-point sample,
  the best restart refined on ``sample_per_cluster * K`` points, then on all points. Deterministic for a seed;
  uses every core torch is allowed. Above ``sample_size`` points, :mod:`mcl.clustering.sampled`: the same fit on
  a seeded sample (``sample_restarts`` restarts), then one chunked pass that assigns every point and moves each
  centroid to its points' mean. Memory: the sample plus one ``(chunk_size, K)`` block, never ``N x K``.
- ``faiss`` (when ``faiss-cpu``/``faiss-gpu`` is installed; only when named): faiss's k-means on a seeded
  ``sample_per_cluster * K`` subsample, then the same exact chunked assignment of all points.

``spherical=True`` clusters by cosine similarity (centroids re-normalised each step), the natural
choice for L2-normalised embeddings. Inertia is always the sum of squared Euclidean distances.
``benchmarks/clustering.py`` compares the backends with scikit-learn (results in ``benchmarks/README.md``).

Example:
    >>> result = kmeans(embeddings, 10, seed=0)      # embeddings: (N, D) numpy array or tensor
    >>> result.labels.shape, result.centroids.shape, result.sizes.sum()
    ((N,), (10, D), N)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mcl.clustering.lloyd import (
    CHUNK_ROWS,
    Partition,
    assign,
    centroid_sums,
    fit_in_memory,
    greedy_kmeans_plus_plus,
    squared_norms,
)
from mcl.clustering.sampled import fit_faiss, fit_sampled, float_rows

__all__ = ["CHUNK_ROWS", "SAMPLE_FIT_MIN_POINTS", "SAMPLE_FIT_PER_CLUSTER", "SAMPLE_PER_CLUSTER", "SAMPLE_RESTARTS",
           "KMeansResult", "assign", "centroid_sums", "default_sample_size", "faiss_available",
           "greedy_kmeans_plus_plus", "kmeans", "squared_norms"]

SAMPLE_PER_CLUSTER = 256  # after the restarts, Lloyd on this many points per cluster, then on all points
SAMPLE_FIT_PER_CLUSTER = 64  # above max(64 K, 8192) points the fit runs on a sample of that size ...
SAMPLE_FIT_MIN_POINTS = 8192  # ... (> the demo's 4000 points: small data never takes the sampled path)
SAMPLE_RESTARTS = 1


@dataclass
class KMeansResult:
    """Outcome of one clustering: what the run directory keeps per stage."""

    centroids: np.ndarray  # (K, D) float32
    labels: np.ndarray  # (N,) int64
    sizes: np.ndarray  # (K,) int64
    inertia: float  # sum of squared distances to the assigned centroid
    iterations: int  # full-data Lloyd iterations (subsample iterations not counted)
    backend: str


def faiss_available() -> bool:
    """Whether the optional faiss backend can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def kmeans(
    points: np.ndarray | torch.Tensor,
    clusters: int,
    restarts: int = 5,
    iterations: int = 100,
    seed: int = 0,
    spherical: bool = False,
    backend: str = "auto",
    device: str | torch.device | None = None,
    tolerance: float = 1e-4,
    sample_per_cluster: int = SAMPLE_PER_CLUSTER,
    sample_size: int | None = None,
    chunk_size: int = CHUNK_ROWS,
    sample_restarts: int | None = SAMPLE_RESTARTS,
) -> KMeansResult:
    """Cluster ``points`` (N, D) into ``clusters`` groups.

    Args:
        restarts: greedy k-means++ + Lloyd runs on the seeding sample (``max(32 K, 4096)`` points);
            the best is refined on ``sample_per_cluster * K`` points, then on all of them (above
            ``sample_size`` points: ``sample_restarts`` runs on the sample, then one pass over all).
        iterations: cap on Lloyd iterations (per restart, and per refinement level).
        tolerance: stop when an iteration lowers the inertia by less than this fraction.
        sample_per_cluster: size per cluster of the intermediate refinement sample.
        backend: ``auto`` (= ``torch``), ``torch`` or ``faiss`` (when installed).
        sample_size: torch backend: when N exceeds it, fit on this many seeded random points and
            assign all points in chunks (:mod:`mcl.clustering.sampled`); ``None``: :func:`default_sample_size`.
            For N <= sample_size every point takes part in the fit, exactly as without sampling.
        chunk_size: rows per distance block of the all-points pass (memory: ``chunk_size * K`` floats).
        sample_restarts: restarts when fitting a sample (``None``: ``restarts``); fewer than on small
            data because a large sample ranks seedings almost alike.

    Example:
        >>> result = kmeans(embeddings, 10, seed=0)
        >>> result.labels.shape, result.centroids.shape
        ((N,), (10, D))

    Raises:
        ValueError: more clusters than points, a non-positive ``chunk_size`` or an unknown backend.
    """
    n_points = points.shape[0]
    if clusters > n_points:
        raise ValueError(f"cannot make {clusters} clusters from {n_points} points")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if backend == "auto":  # the sampled torch fit is the faster one (benchmarks/clustering.py)
        backend = "torch"
    if backend == "faiss":
        fit = fit_faiss(points, clusters, restarts, iterations, seed, spherical, sample_per_cluster, chunk_size)
        return _result(fit, clusters, "faiss")
    if backend != "torch":
        raise ValueError(f"unknown k-means backend {backend!r} (expected auto, torch or faiss)")
    sample_size = default_sample_size(clusters) if sample_size is None else max(clusters, sample_size)
    if n_points <= sample_size:
        data = float_rows(points, slice(None), device).contiguous()
        fit = fit_in_memory(data, clusters, restarts, iterations, seed, spherical, tolerance, sample_per_cluster)
    else:  # points stay as given (e.g. a float16 memory map): only the sample and one chunk become float32
        fit = fit_sampled(points, clusters, restarts if sample_restarts is None else sample_restarts, iterations,
                          seed, spherical, tolerance, sample_per_cluster, sample_size, chunk_size, device)
    return _result(fit, clusters, "torch")


def default_sample_size(clusters: int) -> int:
    """Points the torch backend fits on by default: ``max(SAMPLE_FIT_PER_CLUSTER * K, SAMPLE_FIT_MIN_POINTS)``."""
    return max(SAMPLE_FIT_PER_CLUSTER * clusters, SAMPLE_FIT_MIN_POINTS)


def _result(fit: Partition, clusters: int, backend: str) -> KMeansResult:
    return KMeansResult(
        centroids=fit.centroids.cpu().numpy().astype(np.float32),
        labels=fit.labels.cpu().numpy().astype(np.int64),
        sizes=torch.bincount(fit.labels, minlength=clusters).cpu().numpy().astype(np.int64),
        inertia=fit.inertia,
        iterations=fit.iterations,
        backend=backend,
    )
