"""Large N: fit centroids on a seeded sample, then assign every point in one chunked pass.

Two fits of :func:`mcl.clustering.kmeans` take this shape:

- :func:`fit_sampled` (torch, above ``sample_size`` points): the in-memory fit of :mod:`mcl.clustering.lloyd`
  (``fast`` kernels, Lloyd stopping at a relative gain of ``max(tolerance, 1e-3)``, below the sample's own noise)
  on a seeded random sample, then one pass over all points, ``chunk_size`` rows at a time, that assigns every
  point to its nearest centroid and accumulates the clusters' sums; each centroid moves to the mean of its
  points (one Lloyd update, so the inertia can only drop) and the inertia of that final partition follows
  exactly from the sums.
- :func:`fit_faiss`: faiss's own k-means on a seeded ``sample_per_cluster * K`` subsample (at most 25 iterations
  per restart: faiss does not stop early), then the same exact chunked assignment.

The points stay as given (e.g. a float16 memory map): only the sample and one ``(chunk_size, D)`` chunk become
float32, and one ``(chunk_size, K)`` distance block is alive at a time, never ``N x K``.

Example:
    >>> fit = fit_sampled(points, 100, restarts=1, iterations=100, seed=0, spherical=False, tolerance=1e-4,
    ...                   sample_per_cluster=256, sample_size=8192, chunk_size=4096)
    >>> fit.labels.shape   # every point, not only the sample
    torch.Size([N])
"""

from __future__ import annotations

import numpy as np
import torch

from mcl.clustering.lloyd import Partition, fit_in_memory, row_min, squared_norms

SAMPLE_TOLERANCE = 1e-3  # a sample's Lloyd stops at this relative gain (finer gains are below its sampling noise)
FAISS_ITERATIONS = 25  # faiss's default; it has no early stop, so every iteration runs


def fit_sampled(points: np.ndarray | torch.Tensor, clusters: int, restarts: int, iterations: int, seed: int,
                spherical: bool, tolerance: float, sample_per_cluster: int, sample_size: int, chunk_size: int,
                device: str | torch.device | None = None) -> Partition:
    """Fit on a seeded sample of ``sample_size`` of the (N, D) ``points``, then one pass over all of them: assign,
    and move each centroid to its points' mean. The partition's labels cover all N points."""
    rows = np.sort(np.random.default_rng([seed, 1]).choice(points.shape[0], sample_size, replace=False))
    sample = float_rows(points, rows, device)
    fit = fit_in_memory(sample, clusters, restarts, iterations, seed, spherical, max(tolerance, SAMPLE_TOLERANCE),
                        sample_per_cluster, fast=True)
    labels, distances, sums, counts = assign_chunks(points, fit.centroids, chunk_size, sample.device)
    # One Lloyd update on all points: the mean of a cluster's points minimises its squared distances,
    # so the partition's inertia w.r.t. the new centroids b can only drop. It follows from the sums S,
    # without a second pass: sum ||x - b||^2 = sum ||x - a||^2 + 2 (a - b) . (S - n a) + n ||a - b||^2
    # per cluster (a: the sample's centroid), in float64 and with small terms only (no cancellation).
    centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].to(sums.dtype), fit.centroids)
    if spherical:
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    old, new, n = fit.centroids.double(), centroids.double(), counts.double()[:, None]
    shift = old - new
    change = (2 * shift * (sums.double() - n * old) + n * shift.square()).sum()
    inertia = float(distances.sum(dtype=torch.float64) + change)
    return Partition(centroids.to(torch.float32), labels, distances, 1, total=max(inertia, 0.0))


def fit_faiss(points: np.ndarray | torch.Tensor, clusters: int, restarts: int, iterations: int, seed: int,
              spherical: bool, sample_per_cluster: int, chunk_size: int) -> Partition:
    """faiss's k-means on a seeded ``sample_per_cluster * K`` subsample, then every point assigned in chunks.

    The points stay as given (e.g. a float16 memory map): memory is the subsample plus one chunk.
    """
    import faiss

    n_points = points.shape[0]
    size = min(n_points, sample_per_cluster * clusters)
    rows = (slice(None) if size == n_points
            else np.sort(np.random.default_rng([seed, 2]).choice(n_points, size, replace=False)))
    sample = np.ascontiguousarray(float_rows(points, rows, "cpu").numpy())
    model = faiss.Kmeans(sample.shape[1], clusters, niter=min(iterations, FAISS_ITERATIONS), nredo=restarts, seed=seed,
                         spherical=spherical, verbose=False, max_points_per_centroid=sample_per_cluster)
    model.train(sample)
    centroids = torch.from_numpy(model.centroids)
    labels, distances, _, _ = assign_chunks(points, centroids, chunk_size, torch.device("cpu"))
    return Partition(centroids, labels, distances, min(iterations, FAISS_ITERATIONS))


def assign_chunks(points: np.ndarray | torch.Tensor, centroids: torch.Tensor, chunk_size: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance of every row, plus per-cluster row sums and counts, chunk by chunk."""
    clusters, n_points = centroids.shape[0], points.shape[0]
    labels = torch.empty(n_points, dtype=torch.long, device=device)
    distances = torch.empty(n_points, dtype=torch.float32, device=device)
    sums = torch.zeros(clusters, points.shape[1], dtype=torch.float32, device=device)
    centroid_norms = squared_norms(centroids)
    for start in range(0, n_points, chunk_size):
        chunk = float_rows(points, slice(start, start + chunk_size), device)
        rows = slice(start, start + len(chunk))
        block = torch.addmm(centroid_norms, chunk, centroids.T, alpha=-2)
        row_min(block, distances[rows], labels[rows])
        distances[rows].add_(squared_norms(chunk)).clamp_min_(0)
        sums.index_add_(0, labels[rows], chunk)  # in place: no (K, D) temporary per chunk
    counts = torch.bincount(labels, minlength=clusters)
    return labels, distances, sums, counts


def float_rows(points: np.ndarray | torch.Tensor, rows: slice | np.ndarray,
               device: str | torch.device | None) -> torch.Tensor:
    """``points[rows]`` as a float32 tensor on ``device`` (default: where the points are)."""
    if torch.is_tensor(points):
        # index_select: a row gather much faster than advanced indexing on CPU (same values)
        block = (points[rows] if isinstance(rows, slice)
                 else points.index_select(0, torch.from_numpy(rows).to(points.device)))
    else:
        array = np.ascontiguousarray(points[rows])
        block = torch.from_numpy(array if array.flags.writeable else array.copy())  # read-only maps: copy the rows
    return block.to(device or block.device, torch.float32)

