"""Label-free stage diagnostics: did stage s train with real groups, and did it learn something new?

Everything here reads arrays only (pseudo-labels, embeddings, cluster ids), never labels, so it runs on
any data. :mod:`mcl.stages` calls :func:`group_statistics` before a stage trains (the collapse check)
and :func:`stage_diagnostics` after it, on a fixed seeded sample of the training set.

Quantities (``N`` samples, batch ``B``, pseudo-label groups of sizes ``n_g``):

- ``groups_trained``: groups with at least 2 samples (a group of one gives its anchor no negative);
  1 for a stage without pseudo-labels (random batches).
- ``mean_negatives``: other images in an anchor's batch that its loss may use as negatives, averaged
  over anchors. ``batch`` mode cuts a group of ``n`` into ``ceil(n / B)`` near-equal batches, so
  ``n / ceil(n / B) - 1``; ``mask`` mode keeps random batches of ``B`` and masks other groups, so
  ``(B - 1) (n - 1) / (N - 1)`` in expectation.
- ``novelty``: 1 - R^2 of a ridge map from the earlier stages' (concatenated, standardised) embeddings
  to stage s's, fitted on half of the sample and scored on the other half; 1 = nothing of stage s is
  linearly predictable from stages 1..s-1.
- ``rankme``: RankMe (Garrido et al., ICML 2023), ``exp`` of the entropy of the normalised singular
  values of the embeddings: their effective rank.
- ``alignment`` / ``uniformity`` (Wang & Isola, ICML 2020) on L2-normalised embeddings of two views:
  ``E ||f(x) - f(x')||^2`` and ``log E exp(-2 ||f(x) - f(y)||^2)``.
- ``view_novelty``: the part of stage s that stages 1..s-1 do not predict *and* that two augmented views
  agree on: a ridge map earlier -> stage s is fitted on the sample's even positions (clean images); on two
  views of the odd positions the residuals ``r_a``, ``r_b`` give ``sum cov(r_a, r_b) / D`` (both sides
  standardised with the fit rows' statistics). Augmentation noise, which ``novelty`` counts as new, cancels.
  The best-validated signal of a stage's gain (``benchmarks/diagnostics_candidates.py``, blind test).
- ``nmi_previous`` / ``ari_previous``: agreement of stage s's clusters with the pseudo-labels it
  trained with (stage s >= 2): low means its clusters cut across what earlier stages found.
- ``stability``: mean ARI between k-means partitions of stage s's sample with different seeds.
- ``new_structure``: ``(1 - nmi_previous) * stability``: stage s's clusters are reproducible *and*
  not the earlier stages' groups again.

Example:
    >>> import numpy as np
    >>> stats = group_statistics(np.array([0, 0, 0, 1, 1, 1]), batch_size=4)
    >>> stats["groups_trained"], round(stats["mean_negatives"], 2)
    (2, 2.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def group_statistics(pseudo_labels: np.ndarray | None, batch_size: int, negatives: str = "batch",
                     num_samples: int | None = None) -> dict[str, Any]:
    """Groups that can train and the mean negatives per anchor for pseudo-labels ``(N,)`` (None: random batches).

    ``num_samples`` is needed when ``pseudo_labels`` is None. Returns ``groups``, ``groups_trained``,
    ``mean_negatives``, ``median_group_size`` and ``groups_below_batch`` (groups smaller than a batch).
    """
    if pseudo_labels is None:
        n = int(num_samples or 0)
        negatives = float(max(0, min(batch_size, n) - 1))
        return {"groups": 1, "groups_trained": 1 if n >= 2 else 0, "mean_negatives": negatives,
                "median_group_size": n, "groups_below_batch": int(n < batch_size)}
    sizes = np.bincount(np.asarray(pseudo_labels, dtype=np.int64))
    sizes = sizes[sizes > 0]
    n = int(sizes.sum())
    if negatives == "batch":
        per_batch = sizes / np.maximum(1, np.ceil(sizes / batch_size))
        per_anchor = per_batch - 1
    else:
        per_anchor = (min(batch_size, n) - 1) * (sizes - 1) / max(1, n - 1)
    mean_negatives = float((sizes * per_anchor).sum() / max(1, n))
    return {"groups": len(sizes), "groups_trained": int((sizes >= 2).sum()), "mean_negatives": mean_negatives,
            "median_group_size": float(np.median(sizes)), "groups_below_batch": int((sizes < batch_size).sum())}


DIAGNOSTICS_SAMPLE = 2000  # rows of the fixed sample every stage's diagnostics read
STABILITY_SEEDS = 3  # extra k-means seeds for the stability score


def sample_rows(num_samples: int, seed: int, size: int = DIAGNOSTICS_SAMPLE) -> np.ndarray:
    """The fixed seeded sample of training rows (sorted int64 indices) every stage's diagnostics use."""
    if num_samples <= size:
        return np.arange(num_samples, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 7919]).choice(num_samples, size, replace=False)).astype(np.int64)


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)


def rankme(embeddings: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe: ``exp(-sum p_k log p_k)`` with ``p = sigma / ||sigma||_1 + eps`` over the singular values."""
    sigma = np.linalg.svd(np.asarray(embeddings, dtype=np.float64), compute_uv=False)
    p = sigma / max(sigma.sum(), 1e-12) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def uniformity(embeddings: np.ndarray, t: float = 2.0) -> float:
    """Wang & Isola's uniformity ``log E exp(-t ||u - v||^2)`` over distinct pairs of L2-normalised rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sq = np.clip(2 - 2 * x @ x.T, 0, None)
    mask = ~np.eye(len(x), dtype=bool)
    return float(np.log(np.exp(-t * sq[mask]).mean()))


def alignment(view_a: np.ndarray, view_b: np.ndarray, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment ``E ||f(x) - f(x')||^alpha`` of two views' L2-normalised embeddings."""
    a = np.asarray(view_a, dtype=np.float64)
    b = np.asarray(view_b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((np.linalg.norm(a - b, axis=1) ** alpha).mean())


def ridge_map(x: np.ndarray, y: np.ndarray, ridge: float = 0.1) -> np.ndarray:
    """Weights ``(D_x, D_y)`` of the ridge map ``x -> y`` (penalty ``ridge * n`` on the Gram matrix of ``x``)."""
    return np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)


def ridge_residual(earlier: np.ndarray, current: np.ndarray, seed: int, ridge: float = 0.1) -> tuple[float, np.ndarray]:
    """1 - R^2 of a ridge map earlier -> current on held-out rows (clipped to [0, 1]), and those rows' residuals.

    Both sides are standardised; the map (penalty ``ridge * n`` on the standardised Gram matrix) is fitted on
    a seeded half of the rows and scored on the other half (R^2 pooled over output dimensions), so a map
    that memorises cannot fake predictability.
    """
    x, y = _standardise(earlier), _standardise(current)
    order = np.random.default_rng([seed, 104729]).permutation(len(x))
    fit, held = order[: len(x) // 2], order[len(x) // 2:]
    weights = ridge_map(x[fit], y[fit], ridge)
    residual = y[held] - x[held] @ weights
    total = ((y[held] - y[held].mean(0)) ** 2).sum()
    # held-out R^2 below 0 (worse than predicting the mean) counts as nothing predictable: novelty 1
    return float(min(1.0, (residual ** 2).sum() / max(total, 1e-12))), residual


def view_rows(rows: np.ndarray) -> np.ndarray:
    """The sample rows whose two augmented views every stage embeds: the odd positions of the fixed sample."""
    return np.asarray(rows)[1::2]


def _live_columns(x: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Columns whose standard deviation is at least ``floor`` x the median column's (the others are dropped:
    a feature silent on the fit rows would be divided by ~0 on the view rows)."""
    std = x.std(0)
    return std >= floor * max(float(np.median(std)), 1e-12)


def view_novelty(earlier: np.ndarray, current: np.ndarray, earlier_views: tuple[np.ndarray, np.ndarray],
                 current_views: tuple[np.ndarray, np.ndarray], ridge: float = 0.1) -> float:
    """View-consistent share of stage s's variance that a ridge map from the earlier stages does not predict.

    ``earlier`` ``(n, D_e)`` / ``current`` ``(n, D)``: clean embeddings of the fit rows (the sample's even
    positions); ``*_views``: the two views' embeddings of the view rows (:func:`view_rows`). Columns that
    barely vary on the fit rows (:func:`_live_columns`) are left out on both sides.
    """
    keep_x, keep_y = _live_columns(earlier), _live_columns(current)
    if not keep_y.any():  # stage s does not vary at all: nothing new
        return 0.0
    earlier, current = earlier[:, keep_x], current[:, keep_y]
    mx, sx = earlier.mean(0), earlier.std(0)
    my, sy = current.mean(0), current.std(0)
    x, y = (earlier - mx) / sx, (current - my) / sy
    weights = ridge_map(x, y, ridge)
    a, b = (((cv[:, keep_y] - my) / sy - ((bv[:, keep_x] - mx) / sx) @ weights)
            for bv, cv in zip(earlier_views, current_views, strict=True))
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a * b).sum() / len(a) / y.shape[1])


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two row-aligned representations."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x, 0)
    y = np.asarray(y, dtype=np.float64) - np.mean(y, 0)
    cross = np.linalg.norm(x.T @ y) ** 2
    return float(cross / max(np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y), 1e-12))


def cluster_stability(embeddings: np.ndarray, clusters: int, seed: int, seeds: int = STABILITY_SEEDS,
                      spherical: bool = False) -> float:
    """Mean pairwise ARI of k-means partitions of ``embeddings`` with ``seeds`` different seeds."""
    from sklearn.metrics import adjusted_rand_score

    from mcl.clustering import kmeans

    points = np.ascontiguousarray(embeddings, dtype=np.float32)
    partitions = [kmeans(points, clusters, restarts=1, iterations=50, seed=seed * 1000 + i, spherical=spherical,
                         backend="torch").labels for i in range(seeds)]
    scores = [adjusted_rand_score(partitions[i], partitions[j])
              for i in range(seeds) for j in range(i + 1, seeds)]
    return float(np.mean(scores))


def stage_diagnostics(current: np.ndarray, earlier: list[np.ndarray], cluster_labels: np.ndarray,
                      previous_labels: np.ndarray | None, clusters: int, seed: int,
                      spherical: bool = False,
                      views: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Label-free diagnostics of one stage from its embeddings of the fixed sample ``(n, D)``.

    ``earlier``: stages 1..s-1's embeddings of the same rows (empty for stage 1); ``cluster_labels``:
    stage s's k-means ids of those rows; ``previous_labels``: the pseudo-labels stage s trained with (rows
    of the sample), None for a stage without them; ``views``: per stage (earlier ones first, stage s last)
    the two views' embeddings of :func:`view_rows`, or None. Novelty values are None for stage 1.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    out: dict[str, Any] = {"sample": len(current), "rankme": rankme(_standardise(current)),
                           "uniformity": uniformity(current[: min(len(current), 1000)])}
    stability = cluster_stability(current, clusters, seed, spherical=spherical)
    out["stability"] = stability
    if earlier:
        before = np.concatenate([_standardise(e) for e in earlier], axis=1)
        novelty, residual = ridge_residual(before, current, seed)
        out["novelty"] = novelty
        out["novelty_cka"] = 1 - linear_cka(before, current)
        out["residual_rankme"] = rankme(residual)
        out["novel_rank"] = novelty * out["rankme"]
        out["view_novelty"] = None
        if views is not None:
            before_views = tuple(np.concatenate([np.asarray(v[i], np.float64) for v in views[:-1]], axis=1)
                                 for i in (0, 1))
            out["view_novelty"] = view_novelty(
                np.concatenate([np.asarray(e[0::2], np.float64) for e in earlier], axis=1),
                np.asarray(current[0::2], np.float64), before_views,
                tuple(np.asarray(v, np.float64) for v in views[-1]))
    else:
        out.update(novelty=None, novelty_cka=None, residual_rankme=None, novel_rank=None, view_novelty=None)
    if previous_labels is not None and len(np.unique(previous_labels)) > 1:
        nmi = float(normalized_mutual_info_score(previous_labels, cluster_labels))
        out["nmi_previous"] = nmi
        out["ari_previous"] = float(adjusted_rand_score(previous_labels, cluster_labels))
        out["new_structure"] = (1 - nmi) * stability
    else:
        out.update(nmi_previous=None, ari_previous=None, new_structure=None)
    return out


# mcl.stages: auto: after stage s >= 2, train stage s+1 while stage s's AUTO_SIGNAL is at least AUTO_THRESHOLD.
# Chosen on the selection data sets of benchmarks/diagnostics_validation.py; there a third stage rarely costs
# suppressed-attribute accuracy (results in benchmarks/results/diagnostics_validation.md), so this rule mostly
# trains every stage: it stops only when a stage's embeddings are spread very evenly over the sphere (lower
# uniformity is more uniform; only ConvNet runs reached -1.25 there). No label-free signal predicted a stage's own
# gain well enough to steer it (docs/data.md).
AUTO_SIGNAL = "uniformity"
AUTO_THRESHOLD = -1.25


def continue_training(diagnostics: list[dict[str, Any]], signal: str = AUTO_SIGNAL,
                      threshold: float = AUTO_THRESHOLD) -> tuple[bool, str]:
    """Whether another stage is worth training after the stages whose diagnostics are given, and why.

    Stage 1 always gets a stage 2 (it has nothing to be new against); after stage s >= 2, another stage
    trains while stage s's ``signal`` is at least ``threshold``.
    """
    last = diagnostics[-1]
    if last["stage"] < 2:
        return True, "stage 1 always gets a second stage"
    value = last.get(signal)
    if value is None:
        return True, f"stage {last['stage']} recorded no {signal}"
    verdict = ">=" if value >= threshold else "<"
    return value >= threshold, f"stage {last['stage']} {signal} {value:.3f} {verdict} {threshold}"
