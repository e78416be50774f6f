import doctest

import numpy as np
import pytest

import mcl.pseudolabels
from mcl.clustering import kmeans
from mcl.config import config_from_dict
from mcl.pseudolabels import (
    PseudoLabeller,
    cluster_stage,
    combine_cluster_labels,
    contiguous_labels,
    group_centroids,
    merge_small_groups,
    pseudo_labels_from_stages,
)
from mcl.stages import StageHistory, next_pseudo_labels


def _stage(rng, n, k, dim=6, skew=False):
    # skewed cluster ids give many small combined groups, so the merge has work to do
    p = np.arange(1, k + 1, dtype=float) ** (3 if skew else 0)
    labels = rng.choice(k, size=n, p=p / p.sum()).astype(np.int64)
    return labels, rng.normal(size=(k, dim)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_next_pseudo_labels_of_the_stage_loop(seed):
    rng = np.random.default_rng(seed)
    config = config_from_dict({"mcl": {"clusters": 7, "min_group_size": 12}})
    history, labeller = StageHistory(), PseudoLabeller(min_group_size=12)
    for _ in range(3):
        labels, centroids = _stage(rng, 500, 7, skew=True)
        history.cluster_labels.append(labels)
        history.centroids.append(centroids)
        ours = labeller.add_stage(labels, centroids)
        expected, info = next_pseudo_labels(history, config)
        assert np.array_equal(ours, expected) and ours.dtype == expected.dtype
        assert labeller.info == info
    assert labeller.info["groups_merged"] > 0, "the data must exercise the merge"


def test_combines_every_stage_and_merges_small_groups():
    rng = np.random.default_rng(3)
    stages = [_stage(rng, 300, 4), _stage(rng, 300, 5, dim=3)]  # radix and width may differ per stage
    labels, info = pseudo_labels_from_stages([s[0] for s in stages], [s[1] for s in stages], min_group_size=20)
    combined = combine_cluster_labels([s[0] for s in stages], [4, 5])
    centroids = group_centroids([s[0] for s in stages], [s[1] for s in stages], combined)
    assert np.array_equal(labels, merge_small_groups(combined, centroids, 20)[0])
    assert info["groups_before_merge"] == combined.max() + 1
    assert info["group_sizes"] == np.bincount(labels).tolist() and min(info["group_sizes"]) >= 20


def test_first_stage_without_small_groups_is_its_own_clusters():
    labels = np.repeat(np.arange(3), 40)[::-1].copy()
    out = PseudoLabeller(min_group_size=10).add_stage(labels, np.eye(3, dtype=np.float32))
    assert np.array_equal(out, labels)


def test_cluster_stage_is_mcl_kmeans():
    points = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)
    ours = cluster_stage(points, 5, seed=11, restarts=2)
    theirs = kmeans(points, 5, 2, 100, seed=11)
    assert np.array_equal(ours.labels, theirs.labels) and np.array_equal(ours.centroids, theirs.centroids)


@pytest.mark.parametrize(("labels", "centroids", "match"), [
    (np.zeros((4, 2), np.int64), np.zeros((2, 3)), "1-D integer"),
    (np.zeros(4, np.float32), np.zeros((2, 3)), "1-D integer"),
    (np.array([0, 1, 2, 0]), np.zeros((2, 3)), r"\[0, 2\)"),
    (np.array([0, 1, 0, 0]), np.zeros(3), r"\(K, D\)"),
    (np.array([0, 1, 0]), np.zeros((2, 3)), "3 cluster labels, the earlier stages 4"),
])
def test_bad_stage_is_a_clear_error(labels, centroids, match):
    labeller = PseudoLabeller()
    labeller.record_stage(np.array([0, 1, 1, 0]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=match):
        labeller.add_stage(labels, centroids)
    assert labeller.num_stages == 1


def test_docstring_example_runs():
    result = doctest.testmod(mcl.pseudolabels)
    assert result.attempted >= 3 and result.failed == 0


def test_pseudo_labels_use_every_stage_not_only_the_latest():
    stage1 = np.array([0, 1, 0, 1])
    stage2 = np.array([2, 2, 2, 0])
    labels = combine_cluster_labels([stage1, stage2], clusters=3)
    # samples 0 and 1 share the latest cluster (2) but not the earlier one: different pseudo-labels
    assert labels[0] != labels[1]
    # samples 0 and 2 share both: same pseudo-label
    assert labels[0] == labels[2]
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_latest_policy_groups_by_the_last_stage_only():
    stage1 = np.repeat([0, 1], 40)
    stage2 = np.tile(np.repeat([0, 1], 20), 2)
    centroids = [np.eye(2, dtype=np.float32)] * 2
    latest, info = pseudo_labels_from_stages([stage1, stage2], centroids, min_group_size=2, stages="latest")
    assert np.array_equal(latest, stage2) and info["groups"] == 2
    combined, info = pseudo_labels_from_stages([stage1, stage2], centroids, min_group_size=2)
    assert info["groups"] == 4 and len(set(zip(combined.tolist(), stage2.tolist(), strict=True))) == 4
    labeller = PseudoLabeller(min_group_size=2, stages="latest")
    labeller.add_stage(stage1, centroids[0])
    assert np.array_equal(labeller.add_stage(stage2, centroids[1]), stage2)
    with pytest.raises(ValueError, match="stages must be one of"):
        pseudo_labels_from_stages([stage1], centroids[:1], 2, stages="first")


def test_pseudo_labels_are_contiguous_and_deterministic():
    rng = np.random.default_rng(0)
    stages = [rng.integers(0, 10, 500) for _ in range(3)]
    first = combine_cluster_labels(stages, 10)
    assert np.array_equal(first, combine_cluster_labels(stages, 10))
    assert set(first.tolist()) == set(range(first.max() + 1))
    combos = {tuple(s[i] for s in stages) for i in range(500)}
    assert first.max() + 1 == len(combos)


def test_combine_rejects_out_of_range_ids():
    with pytest.raises(ValueError):
        combine_cluster_labels([np.array([0, 5])], clusters=3)


def test_merge_small_groups_into_nearest_centroid():
    labels = np.array([0] * 50 + [1] * 50 + [2] * 3)
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [9.0, 0.0]])
    merged, count = merge_small_groups(labels, centroids, min_group_size=10)
    assert count == 1
    assert (merged[100:] == merged[50]).all(), "the small group joins the nearest large group"
    assert merged[0] != merged[50]


def test_group_centroids_concatenate_stage_centroids():
    stage_labels = [np.array([0, 1, 1]), np.array([1, 0, 0])]
    stage_centroids = [np.array([[0.0], [1.0]]), np.array([[5.0], [6.0]])]
    pseudo = combine_cluster_labels(stage_labels, 2)
    centroids = group_centroids(stage_labels, stage_centroids, pseudo)
    assert centroids[pseudo[0]].tolist() == [0.0, 6.0]
    assert centroids[pseudo[1]].tolist() == [1.0, 5.0]


def test_combination_equals_one_mixed_radix_code_relabelled():
    rng = np.random.default_rng(5)
    stages, radices = [rng.integers(0, k, 2000) for k in (7, 5, 9)], [7, 5, 9]
    code = (stages[0] * 5 + stages[1]) * 9 + stages[2]
    assert np.array_equal(combine_cluster_labels(stages, radices), np.unique(code, return_inverse=True)[1])


@pytest.mark.parametrize("scale,bound", [(1, 60), (10**7, 10**10)])  # presence table; sort fallback for huge codes
def test_contiguous_labels_keep_order(scale, bound):
    values = np.random.default_rng(6).integers(0, 60, 500) * scale
    labels, groups = contiguous_labels(values, bound)
    assert np.array_equal(labels, np.unique(values, return_inverse=True)[1]) and groups == len(np.unique(values))
