import doctest

import numpy as np
import pytest

import mcl.pseudolabels
from mcl.clustering import kmeans
from mcl.config import config_from_dict
from mcl.pseudolabels import PseudoLabeller, cluster_stage, pseudo_labels_from_stages
from mcl.sampling import combine_cluster_labels, group_centroids, merge_small_groups
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
