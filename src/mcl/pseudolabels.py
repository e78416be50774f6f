"""Standalone MCL pseudo-labelling: per-stage k-means clusters in, next stage's pseudo-labels out.

Plain arrays only (no config, no run directory), so the same code serves :mod:`mcl.stages`, the
``mcl cluster`` command and any other training loop.

Algorithm, after stages 1..s (``N`` samples; stage ``t`` clustered into ``K_t`` clusters):

1. **Cluster** each stage's embeddings ``(N, D_t)`` with k-means (:func:`cluster_stage`):
   cluster ids ``c_t`` of shape ``(N,)`` and centroids ``(K_t, D_t)``.
2. **Combine** the ids of *all* stages so far (:func:`combine_cluster_labels`):
   ``g = g * K_t + c_t``, relabelled to ``0..G-1`` in code order, so two samples share a
   pseudo-label only if they shared a cluster in every stage.
3. **Merge small groups**: a group's centroid is its members' cluster centroids of every stage,
   concatenated (``(G, sum D_t)``, :func:`group_centroids`); every group with fewer
   than ``min_group_size`` samples joins the nearest large group
   (:func:`merge_small_groups`), so no sample is dropped. Labels stay contiguous.

Example:
    >>> import numpy as np
    >>> from mcl.pseudolabels import PseudoLabeller, cluster_stage
    >>> rng = np.random.default_rng(0)
    >>> labeller = PseudoLabeller(min_group_size=8)
    >>> for stage in range(2):
    ...     embeddings = rng.normal(size=(200, 16)).astype(np.float32)
    ...     result = cluster_stage(embeddings, clusters=4, seed=stage)
    ...     pseudo_labels = labeller.add_stage(result.labels, result.centroids)
    >>> pseudo_labels.shape, labeller.num_stages
    ((200,), 2)
    >>> sorted(labeller.info)
    ['group_sizes', 'groups', 'groups_before_merge', 'groups_merged']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mcl.clustering import KMeansResult, kmeans

logger = logging.getLogger("mcl")


def cluster_stage(embeddings: np.ndarray | torch.Tensor, clusters: int, seed: int, restarts: int = 5,
                  iterations: int = 100, spherical: bool = False, backend: str = "auto",
                  device: str | torch.device | None = None, sample_size: int | None = None) -> KMeansResult:
    """k-means of one stage's embeddings ``(N, D)`` with mcl's defaults (``mcl.kmeans_*`` in the config).

    Above ``sample_size`` points (default :func:`mcl.clustering.default_sample_size`) the fit runs on a
    seeded sample and every point is then assigned in chunks (memory: the sample plus one chunk).

    The same call :mod:`mcl.stages` makes: ``restarts`` greedy k-means++ runs, at most ``iterations``
    Lloyd steps each, deterministic for ``seed``. Returns labels ``(N,)``, centroids ``(K, D)``, sizes.
    """
    return kmeans(embeddings, clusters, restarts, iterations, seed=seed, spherical=spherical, backend=backend,
                  device=device, sample_size=sample_size)


def contiguous_labels(values: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Relabel non-negative ints below ``bound`` to ``0..G-1`` in increasing order; returns ``(labels, G)``.

    O(N + bound) with a presence table when ``bound`` is at most a few times N, else a sort.
    """
    values = np.asarray(values, dtype=np.int64)
    if bound > 4 * len(values) + (1 << 16):
        _, inverse = np.unique(values, return_inverse=True)
        return inverse.astype(np.int64).reshape(-1), int(inverse.max(initial=-1)) + 1
    present = np.bincount(values, minlength=bound) > 0
    new_id = np.cumsum(present) - 1
    return new_id[values], int(present.sum())


def combine_cluster_labels(stage_labels: Sequence[np.ndarray], clusters: int | Sequence[int]) -> np.ndarray:
    """Pseudo-labels from the cluster ids of all stages so far, relabelled to ``0..G-1``.

    Mixed radix: ``g = g * K_s + c_s`` over stages s = 1..S, so two samples share a pseudo-label
    only if they shared a cluster in *every* stage (the public reference code keeps only the latest
    stage's clusters). Contiguous ids are assigned in order of the combined code, so the result is
    deterministic. The code is relabelled after every stage (order-preserving), so it stays below
    ``G * K`` and the whole combination is O(N) per stage.
    """
    if not stage_labels:
        raise ValueError("need the cluster labels of at least one stage")
    radices = [clusters] * len(stage_labels) if isinstance(clusters, int) else list(clusters)
    code = np.zeros(len(stage_labels[0]), dtype=np.int64)
    groups = 1
    for labels, radix in zip(stage_labels, radices, strict=True):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != code.shape:
            raise ValueError(f"stage labels have {labels.shape[0]} entries, expected {code.shape[0]}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= radix:
            raise ValueError(f"cluster ids must lie in [0, {radix})")
        code, groups = contiguous_labels(code * radix + labels, groups * radix)
    return code


def group_centroids(stage_labels: Sequence[np.ndarray], stage_centroids: Sequence[np.ndarray],
                    pseudo_labels: np.ndarray) -> np.ndarray:
    """Centroid of each pseudo-label group: its clusters' centroids from every stage, concatenated."""
    groups = int(pseudo_labels.max()) + 1
    first_member = np.zeros(groups, dtype=np.int64)
    first_member[pseudo_labels[::-1]] = np.arange(len(pseudo_labels))[::-1]
    parts = [np.asarray(centroids)[np.asarray(labels)[first_member]]
             for labels, centroids in zip(stage_labels, stage_centroids, strict=True)]
    return np.concatenate(parts, axis=1)


def merge_small_groups(pseudo_labels: np.ndarray, centroids: np.ndarray, min_group_size: int) -> tuple[np.ndarray, int]:
    """Merge every group smaller than ``min_group_size`` into the nearest large group (by centroid).

    Small groups give too few in-group negatives (and tiny batches); merging keeps every sample
    in training instead of dropping it as the reference code does. Returns contiguous labels and
    the number of groups merged. If no group is large enough, everything becomes one group.
    """
    sizes = np.bincount(pseudo_labels)
    small = np.flatnonzero(sizes < min_group_size)
    if len(small) == 0:
        return pseudo_labels.copy(), 0
    large = np.flatnonzero(sizes >= min_group_size)
    if len(large) == 0:
        return np.zeros_like(pseudo_labels), len(sizes) - 1 if len(sizes) > 1 else 0
    distances = ((centroids[small, None, :] - centroids[None, large, :]) ** 2).sum(-1)
    target = np.arange(len(sizes))
    target[small] = large[distances.argmin(axis=1)]
    merged, _ = contiguous_labels(target[pseudo_labels], len(sizes))
    return merged, len(small)




GROUP_STAGES = ("all", "latest")


def _check_group_stages(stages: str) -> None:
    if stages not in GROUP_STAGES:
        raise ValueError(f"stages must be one of {GROUP_STAGES}, got {stages!r}")


def grouped_stages(stage_labels: Sequence[np.ndarray], stage_centroids: Sequence[np.ndarray],
                   stages: str = "all") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The (cluster ids, centroids) of the stages whose clusters form the groups: every stage, or the latest."""
    _check_group_stages(stages)
    used = slice(-1, None) if stages == "latest" else slice(None)
    return list(stage_labels[used]), list(stage_centroids[used])


def pseudo_labels_from_stages(stage_labels: list[np.ndarray], stage_centroids: list[np.ndarray],
                              min_group_size: int, stages: str = "all") -> tuple[np.ndarray, dict[str, Any]]:
    """Pseudo-labels ``(N,)`` from the stages' cluster ids and centroids, and what the merge did.

    ``stages``: ``all`` combines every stage so far (MCL as the paper states it); ``latest`` uses only the
    last stage's clusters (what the released reference code's loop does: it reloads the latest labels).
    The radix of stage ``t`` is its number of centroids ``K_t``. ``info`` holds ``groups_before_merge``,
    ``groups_merged``, ``groups`` and ``group_sizes`` (a list of ints); when fewer than 2 groups remain, also
    ``sizes_before_merge``.
    """
    if not stage_labels:
        raise ValueError("need the cluster labels of at least one stage")
    stage_labels, stage_centroids = grouped_stages(stage_labels, stage_centroids, stages)
    radices = [len(centroids) for centroids in stage_centroids]
    combined = combine_cluster_labels(stage_labels, radices)
    centroids = group_centroids(stage_labels, stage_centroids, combined)
    merged_labels, merged = merge_small_groups(combined, centroids, min_group_size)
    sizes = np.bincount(merged_labels)
    info = {"groups_before_merge": int(combined.max()) + 1, "groups_merged": merged, "groups": len(sizes),
            "group_sizes": sizes.tolist()}
    if len(sizes) < 2:  # the collapse error's advice names the group sizes the merge started from
        info["sizes_before_merge"] = np.bincount(combined).tolist()
    if merged:
        logger.info("merged %d pseudo-label groups smaller than %d samples into their nearest group",
                    merged, min_group_size)
    return merged_labels, info


class PseudoLabeller:
    """Accumulates the stages' clusterings and yields the pseudo-labels of the next stage.

    ``add_stage(labels, centroids)`` records stage s (ids ``(N,)`` in ``[0, K)``, centroids ``(K, D)``)
    and returns the pseudo-labels stage s+1 trains with; :attr:`info` describes the last result.
    """

    def __init__(self, min_group_size: int = 32, stages: str = "all") -> None:
        if min_group_size < 1:
            raise ValueError(f"min_group_size must be a positive integer, got {min_group_size}")
        _check_group_stages(stages)
        self.min_group_size = min_group_size
        self.stages = stages
        self.stage_labels: list[np.ndarray] = []
        self.stage_centroids: list[np.ndarray] = []
        self.info: dict[str, Any] = {}

    @property
    def num_stages(self) -> int:
        """Stages recorded so far."""
        return len(self.stage_labels)

    @property
    def num_samples(self) -> int | None:
        """N of the recorded stages (None before the first)."""
        return len(self.stage_labels[0]) if self.stage_labels else None

    def record_stage(self, cluster_labels: np.ndarray, centroids: np.ndarray) -> None:
        """Record one stage's clustering without computing pseudo-labels (e.g. when reloading stages)."""
        labels = np.asarray(cluster_labels)
        centroids = np.asarray(centroids)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"cluster labels must be a 1-D integer array, got shape {labels.shape} {labels.dtype}")
        if centroids.ndim != 2 or len(centroids) < 1:
            raise ValueError(f"centroids must be a (K, D) array, got shape {centroids.shape}")
        if self.num_samples is not None and len(labels) != self.num_samples:
            raise ValueError(f"stage {self.num_stages + 1} has {len(labels)} cluster labels, "
                             f"the earlier stages {self.num_samples}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(centroids)):
            raise ValueError(f"cluster ids must lie in [0, {len(centroids)}) (one per centroid)")
        self.stage_labels.append(labels.astype(np.int64, copy=False))
        self.stage_centroids.append(centroids)

    def pseudo_labels(self) -> np.ndarray:
        """Pseudo-labels ``(N,)`` from all recorded stages (updates :attr:`info`)."""
        labels, self.info = pseudo_labels_from_stages(self.stage_labels, self.stage_centroids, self.min_group_size,
                                                      self.stages)
        return labels

    def add_stage(self, cluster_labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Record a stage's clusters and return the pseudo-labels ``(N,)`` for the next stage."""
        self.record_stage(cluster_labels, centroids)
        return self.pseudo_labels()
