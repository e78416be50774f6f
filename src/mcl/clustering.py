"""k-means for MCL's per-stage clustering.

Two backends behind :func:`kmeans`:

- ``torch``: batched Lloyd iterations on the training device, k-means++ initialisation, best of
  ``restarts`` runs by inertia, empty clusters re-seeded with the points farthest from their
  centroid; deterministic for a seed.
- ``faiss`` (when ``faiss-cpu``/``faiss-gpu`` is installed): for millions of points.

``spherical=True`` clusters by cosine similarity (centroids re-normalised each step), the natural
choice for L2-normalised embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger("mcl")

# Rows per distance block: bounds memory at chunk * K floats whatever N is.
_CHUNK = 65536
FAISS_MIN_POINTS = 200_000


@dataclass
class KMeansResult:
    """Outcome of one clustering: what the run directory keeps per stage."""

    centroids: np.ndarray  # (K, D) float32
    labels: np.ndarray  # (N,) int64
    sizes: np.ndarray  # (K,) int64
    inertia: float  # sum of squared distances to the assigned centroid
    iterations: int
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
) -> KMeansResult:
    """Cluster ``points`` (N, D) into ``clusters`` groups; returns the best of ``restarts`` runs."""
    n_points = points.shape[0]
    if clusters > n_points:
        raise ValueError(f"cannot make {clusters} clusters from {n_points} points")
    if backend == "auto":
        backend = "faiss" if n_points >= FAISS_MIN_POINTS and faiss_available() else "torch"
    if backend == "faiss":
        return _kmeans_faiss(points, clusters, restarts, iterations, seed, spherical)
    if backend != "torch":
        raise ValueError(f"unknown k-means backend {backend!r} (expected auto, torch or faiss)")
    data = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points)
    data = data.to(device or "cpu", torch.float32)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(restarts):
        result = _lloyd(data, clusters, iterations, generator, spherical, tolerance)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def assign(data: torch.Tensor, centroids: torch.Tensor, spherical: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and the squared distance to it, in row blocks."""
    labels = torch.empty(data.shape[0], dtype=torch.long, device=data.device)
    distances = torch.empty(data.shape[0], dtype=torch.float32, device=data.device)
    centroid_norms = _squared_norms(centroids)
    for start in range(0, data.shape[0], _CHUNK):
        block = data[start : start + _CHUNK]
        if spherical:
            similarity = block @ centroids.T
            best, index = similarity.max(dim=1)
            distance = (_squared_norms(block) + centroid_norms[index] - 2 * best).clamp_min_(0)
        else:
            squared = centroid_norms[None, :] - 2 * (block @ centroids.T)
            best, index = squared.min(dim=1)
            distance = (best + _squared_norms(block)).clamp_min_(0)
        labels[start : start + _CHUNK] = index
        distances[start : start + _CHUNK] = distance
    return labels, distances


def _kmeans_plus_plus(data: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    n_points = data.shape[0]
    first = int(torch.randint(n_points, (1,), generator=generator))
    centroids = [data[first]]
    closest = _squared_norms(data - data[first]).clamp_min_(0)
    for _ in range(1, clusters):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than clusters: pick uniformly
            index = int(torch.randint(n_points, (1,), generator=generator))
        else:
            weights = (closest / total).double().cpu()
            index = int(torch.multinomial(weights, 1, generator=generator))
        centroids.append(data[index])
        closest = torch.minimum(closest, _squared_norms(data - data[index]))
    return torch.stack(centroids)


def _update(data: torch.Tensor, labels: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(clusters, data.shape[1], device=data.device).index_add_(0, labels, data)
    counts = torch.bincount(labels, minlength=clusters)
    return sums / counts.clamp_min(1)[:, None].float(), counts


def _reseed_empty(centroids: torch.Tensor, counts: torch.Tensor, data: torch.Tensor,
                  distances: torch.Tensor) -> int:
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty) == 0:
        return 0
    # The points worst served by their centroid become the new centres of the empty clusters.
    farthest = torch.topk(distances, len(empty)).indices
    centroids[empty] = data[farthest]
    distances[farthest] = 0
    return len(empty)


def _lloyd(data: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator, spherical: bool,
           tolerance: float) -> KMeansResult:
    centroids = _kmeans_plus_plus(data, clusters, generator)
    if spherical:
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    scale = float(data.var(dim=0).sum()) or 1.0
    iteration = 0
    while iteration < iterations:
        iteration += 1
        labels, distances = assign(data, centroids, spherical)
        updated, counts = _update(data, labels, clusters)
        reseeded = _reseed_empty(updated, counts, data, distances)
        if spherical:
            updated = torch.nn.functional.normalize(updated, dim=1)
        shift = float(_squared_norms(updated - centroids).sum()) / scale
        centroids = updated
        if shift <= tolerance and not reseeded:
            break
    labels, distances = assign(data, centroids, spherical)
    sizes = torch.bincount(labels, minlength=clusters)
    return KMeansResult(
        centroids=centroids.cpu().numpy().astype(np.float32),
        labels=labels.cpu().numpy().astype(np.int64),
        sizes=sizes.cpu().numpy().astype(np.int64),
        inertia=float(distances.double().sum()),
        iterations=iteration,
        backend="torch",
    )


def _kmeans_faiss(points: np.ndarray | torch.Tensor, clusters: int, restarts: int, iterations: int, seed: int,
                  spherical: bool) -> KMeansResult:
    import faiss

    data = points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)
    data = np.ascontiguousarray(data, dtype=np.float32)
    model = faiss.Kmeans(data.shape[1], clusters, niter=iterations, nredo=restarts, seed=seed,
                         spherical=spherical, verbose=False, max_points_per_centroid=max(256, len(data)))
    model.train(data)
    distances, labels = model.index.search(data, 1)
    labels = labels[:, 0].astype(np.int64)
    if spherical:  # inner-product index: convert similarity to squared distance
        distances = np.maximum((data * data).sum(1, keepdims=True) + 1 - 2 * distances, 0)
    return KMeansResult(
        centroids=model.centroids.astype(np.float32),
        labels=labels,
        sizes=np.bincount(labels, minlength=clusters).astype(np.int64),
        inertia=float(distances.astype(np.float64).sum()),
        iterations=iterations,
        backend="faiss",
    )
