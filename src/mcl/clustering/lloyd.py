"""Lloyd's k-means in memory, in torch: the kernels and the coarse-to-fine fit of :func:`mcl.clustering.kmeans`.

:func:`fit_in_memory` runs greedy k-means++ (:func:`greedy_kmeans_plus_plus`, scikit-learn's variant: the best
of ``2 + ln K`` candidates per centre) and :func:`lloyd` on a random sample of ``max(32 K, 4096)`` rows, once per
restart; the best restart (lowest inertia) is refined by Lloyd on ``sample_per_cluster * K`` rows, then on all
rows, each level until the inertia improves by less than ``tolerance`` (relative). The samples are nested
prefixes of one seeded draw, so the result is deterministic for a seed.

Distances (:func:`assign`): ``||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c)``, one ``addmm`` per row block of a
``(rows, K)`` matrix with precomputed squared norms; centroid sums (:func:`centroid_sums`) one sparse
``(K, N) @ (N, D)`` matmul. Empty clusters are re-seeded with the rows farthest from their centroid.
``spherical=True`` re-normalises the centroids each step (cosine k-means for unit-norm rows).

``fast=True`` (used by the sampled fit of :mod:`mcl.clustering.sampled`) swaps in :func:`assign_fast` (cache-sized
blocks, the row minimum by numpy's vectorised ``argmin``) and :func:`sums_fast` (``index_add_``): the same labels,
sums added in another order, so not bit for bit the plain path.

Example:
    >>> data = torch.randn(1000, 8)
    >>> fit = fit_in_memory(data, 10, restarts=3, iterations=100, seed=0, spherical=False, tolerance=1e-4,
    ...                     sample_per_cluster=256)
    >>> fit.centroids.shape, fit.labels.shape
    (torch.Size([10, 8]), torch.Size([1000]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# A distance block holds at most this many floats (rows * K): 64 MiB whatever N is.
_BLOCK_ELEMENTS = 1 << 24
SEED_PER_CLUSTER = 32  # restarts (seeding + Lloyd) run on this many points per cluster ...
SEED_MIN_POINTS = 4096  # ... but on at least this many (restarts at small K are cheap; tiny samples rank them badly)
CHUNK_ROWS = 4096  # rows per distance block of the fast path and of the all-points pass: (4096, K) stays in cache


@dataclass
class Partition:
    """Centroids with the assignment that is consistent with them (torch tensors, on the fit's device)."""

    centroids: torch.Tensor
    labels: torch.Tensor
    distances: torch.Tensor  # squared distance of every point to its centroid
    iterations: int
    total: float | None = None  # the inertia, when ``distances`` are those to earlier centroids

    @property
    def inertia(self) -> float:
        """Sum of squared distances of the points to their centroids (float64 sum)."""
        return float(self.distances.sum(dtype=torch.float64)) if self.total is None else self.total


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row, without an (N, D) temporary."""
    return torch.linalg.vector_norm(x, dim=1).square_()


def assign(data: torch.Tensor, centroids: torch.Tensor,
           norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and the squared distance to it, in row blocks.

    ``||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c)``: one ``addmm`` per block gives the bracket, the
    row norms (``norms``, computed if not given) are added to the minimum only. For unit-norm
    (spherical) centroids the nearest centroid is also the one of highest cosine similarity.
    """
    norms = squared_norms(data) if norms is None else norms
    labels = torch.empty(data.shape[0], dtype=torch.long, device=data.device)
    partial = torch.empty(data.shape[0], dtype=torch.float32, device=data.device)
    centroid_norms = squared_norms(centroids)
    rows = max(1024, _BLOCK_ELEMENTS // centroids.shape[0])
    for start in range(0, data.shape[0], rows):
        block = torch.addmm(centroid_norms, data[start : start + rows], centroids.T, alpha=-2)
        torch.min(block, dim=1, out=(partial[start : start + rows], labels[start : start + rows]))
    return labels, partial.add_(norms).clamp_min_(0)


def row_min(block: torch.Tensor, values: torch.Tensor, labels: torch.Tensor) -> None:
    """``torch.min(block, dim=1, out=(values, labels))``, faster on CPU: same values and (first) indices.

    On CPU torch's min-with-index along rows is scalar code while numpy's ``argmin`` is vectorised;
    gathering the minima by index then costs next to nothing.
    """
    if block.device.type != "cpu":
        torch.min(block, dim=1, out=(values, labels))
        return
    np.argmin(block.numpy(), axis=1, out=labels.numpy())
    torch.gather(block, 1, labels[:, None], out=values[:, None])


def assign_fast(data: torch.Tensor, centroids: torch.Tensor,
                norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign` for the fast path: blocks of ``CHUNK_ROWS`` rows (cache-sized) and :func:`row_min`."""
    norms = squared_norms(data) if norms is None else norms
    labels = torch.empty(data.shape[0], dtype=torch.long, device=data.device)
    partial = torch.empty(data.shape[0], dtype=torch.float32, device=data.device)
    centroid_norms = squared_norms(centroids)
    for start in range(0, data.shape[0], CHUNK_ROWS):
        block = torch.addmm(centroid_norms, data[start : start + CHUNK_ROWS], centroids.T, alpha=-2)
        row_min(block, partial[start : start + CHUNK_ROWS], labels[start : start + CHUNK_ROWS])
    return labels, partial.add_(norms).clamp_min_(0)


def sums_fast(data: torch.Tensor, labels: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`centroid_sums` for the fast path: ``index_add_`` instead of the sparse matmul (sums in another order)."""
    sums = torch.zeros(clusters, data.shape[1], dtype=data.dtype, device=data.device).index_add_(0, labels, data)
    return sums, torch.bincount(labels, minlength=clusters)


def centroid_sums(data: torch.Tensor, labels: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums of the rows and the cluster sizes (one sparse ``(K, N) @ (N, D)`` matmul)."""
    counts = torch.bincount(labels, minlength=clusters)
    if data.device.type != "cpu":  # index_add_ is the fast path on accelerators
        return torch.zeros(clusters, data.shape[1], device=data.device).index_add_(0, labels, data), counts
    rows = torch.arange(data.shape[0], device=data.device)
    membership = torch.sparse_coo_tensor(torch.stack([labels, rows]), torch.ones_like(rows, dtype=data.dtype),
                                         (clusters, data.shape[0]), check_invariants=False)
    return torch.sparse.mm(membership, data), counts


def _pick(cumulative: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices drawn with probability proportional to the increments of ``cumulative``."""
    total = float(cumulative[-1])
    if total <= 0:  # every point coincides with a chosen centre: pick uniformly
        return torch.randint(len(cumulative), (count,), generator=generator).to(cumulative.device)
    draws = torch.rand(count, generator=generator, dtype=torch.float64).to(cumulative.device) * total
    return torch.searchsorted(cumulative, draws).clamp_max_(len(cumulative) - 1)


def greedy_kmeans_plus_plus(data: torch.Tensor, norms: torch.Tensor, clusters: int,
                            generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding, greedy variant (scikit-learn's): the best of ``2 + ln K`` candidates per centre."""
    trials = 2 + int(math.log(clusters))
    first = int(torch.randint(data.shape[0], (1,), generator=generator))
    chosen = [first]
    closest = (norms + norms[first] - 2 * data @ data[first]).clamp_min_(0)
    for _ in range(1, clusters):
        candidates = _pick(torch.cumsum(closest.double(), 0), trials, generator)
        to_candidates = torch.addmm(norms[candidates, None], data[candidates], data.T, alpha=-2).add_(norms)
        improved = torch.minimum(closest, to_candidates).clamp_min_(0)
        best = int(improved.sum(dim=1, dtype=torch.float64).argmin())
        chosen.append(int(candidates[best]))
        closest = improved[best]
    return data[torch.tensor(chosen, device=data.device)].clone()


def _reseed_empty(centroids: torch.Tensor, counts: torch.Tensor, data: torch.Tensor,
                  distances: torch.Tensor) -> int:
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty) == 0:
        return 0
    # The points worst served by their centroid become the new centres of the empty clusters.
    farthest = torch.topk(distances, len(empty)).indices
    centroids[empty] = data[farthest]
    return len(empty)


def _update(data: torch.Tensor, labels: torch.Tensor, distances: torch.Tensor, clusters: int,
            spherical: bool, fast: bool = False) -> torch.Tensor:
    sums, counts = (sums_fast if fast else centroid_sums)(data, labels, clusters)
    centroids = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
    _reseed_empty(centroids, counts, data, distances)
    return torch.nn.functional.normalize(centroids, dim=1) if spherical else centroids


def lloyd(data: torch.Tensor, norms: torch.Tensor, centroids: torch.Tensor, iterations: int, tolerance: float,
          spherical: bool, fast: bool = False) -> Partition:
    """Lloyd iterations from ``centroids`` until the relative inertia gain drops below ``tolerance``.

    ``fast`` (the sampled fit only): :func:`assign_fast` and :func:`sums_fast` instead of
    :func:`assign` and :func:`centroid_sums` (same labels; sums in another order, so not bit for bit).
    """
    clusters = centroids.shape[0]
    assign_ = assign_fast if fast else assign
    previous = math.inf
    for iteration in range(1, iterations + 1):
        labels, distances = assign_(data, centroids, norms)
        inertia = float(distances.sum(dtype=torch.float64))
        if previous - inertia <= tolerance * inertia:
            return Partition(centroids, labels, distances, iteration)
        previous = inertia
        centroids = _update(data, labels, distances, clusters, spherical, fast)
    labels, distances = assign_(data, centroids, norms)
    return Partition(centroids, labels, distances, iterations)


def _levels(n_points: int, clusters: int, sample_per_cluster: int, seed: int) -> list[np.ndarray | None]:
    """Row subsets from coarse to fine: the seeding sample, the refinement sample, all points (None).

    The samples are nested (prefixes of one random draw), and a level is skipped when it would
    not be smaller than the next one.
    """
    seeding = max(SEED_PER_CLUSTER * clusters, SEED_MIN_POINTS)
    sizes = [min(n_points, seeding), min(n_points, max(seeding, sample_per_cluster * clusters))]
    sizes = sorted({max(clusters, size) for size in sizes if size < n_points})
    if not sizes:
        return [None]
    draw = np.random.default_rng(seed).choice(n_points, sizes[-1], replace=False)
    return [np.sort(draw[:size]) for size in sizes] + [None]


def fit_in_memory(data: torch.Tensor, clusters: int, restarts: int, iterations: int, seed: int, spherical: bool,
                  tolerance: float, sample_per_cluster: int, fast: bool = False) -> Partition:
    """The in-memory fit (see the module docstring): ``restarts`` seedings + Lloyd on the coarsest level, then
    each finer level starts from the previous level's centroids. ``data``: (N, D) float32, on the fit's device."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    norms = squared_norms(data)
    fit: Partition | None = None
    for level, rows in enumerate(_levels(data.shape[0], clusters, sample_per_cluster, seed)):
        index = None if rows is None else torch.from_numpy(rows).to(data.device)
        if fast:  # index_select: a row gather much faster than advanced indexing on CPU, same values
            points = data if index is None else data.index_select(0, index)
            point_norms = norms if index is None else norms.index_select(0, index)
        else:
            points = data if index is None else data[index]
            point_norms = norms if index is None else norms[index]
        if level == 0:
            fit = _best_restart(points, point_norms, clusters, restarts, iterations, tolerance, spherical, generator,
                                fast)
        else:
            assert fit is not None
            fit = lloyd(points, point_norms, fit.centroids, iterations, tolerance, spherical, fast)
    assert fit is not None
    return fit


def _best_restart(data: torch.Tensor, norms: torch.Tensor, clusters: int, restarts: int, iterations: int,
                  tolerance: float, spherical: bool, generator: torch.Generator, fast: bool = False) -> Partition:
    """Lowest-inertia result of ``restarts`` greedy k-means++ seedings, each followed by Lloyd."""
    best: Partition | None = None
    for _ in range(restarts):
        start = greedy_kmeans_plus_plus(data, norms, clusters, generator)
        if spherical:
            start = torch.nn.functional.normalize(start, dim=1)
        fit = lloyd(data, norms, start, iterations, tolerance, spherical, fast)
        if best is None or fit.inertia < best.inertia:
            best = fit
    assert best is not None
    return best

