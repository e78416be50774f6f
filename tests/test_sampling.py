import numpy as np
import pytest

from mcl.sampling import (
    ClusterBatchSampler,
    RandomBatchSampler,
    combine_cluster_labels,
    contiguous_labels,
    group_centroids,
    merge_small_groups,
    split_sizes,
    stable_group_order,
)


def test_pseudo_labels_use_every_stage_not_only_the_latest():
    stage1 = np.array([0, 1, 0, 1])
    stage2 = np.array([2, 2, 2, 0])
    labels = combine_cluster_labels([stage1, stage2], clusters=3)
    # samples 0 and 1 share the latest cluster (2) but not the earlier one: different pseudo-labels
    assert labels[0] != labels[1]
    # samples 0 and 2 share both: same pseudo-label
    assert labels[0] == labels[2]
    assert sorted(set(labels.tolist())) == [0, 1, 2]


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


def _check_epoch(sampler, labels, n):
    batches = list(sampler)
    seen = np.concatenate(batches)
    assert np.array_equal(np.sort(seen), np.arange(n)), "every index exactly once"
    for batch in batches:
        assert len(set(labels[batch].tolist())) == 1, "every batch from one group"
    return batches


def test_cluster_batch_sampler_visits_every_sample_once_single_group_batches():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 1003)
    sampler = ClusterBatchSampler(labels, batch_size=64, seed=3)
    batches = _check_epoch(sampler, labels, 1003)
    assert max(len(b) for b in batches) <= 64
    assert len(batches) == len(sampler)


def test_cluster_batch_sampler_reproducible_and_reshuffles_per_epoch():
    labels = np.random.default_rng(2).integers(0, 4, 300)
    a, b = ClusterBatchSampler(labels, 32, seed=5), ClusterBatchSampler(labels, 32, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    a.set_epoch(1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    # batch order mixes groups across the epoch rather than emitting group after group
    groups_in_order = [labels[batch[0]] for batch in b]
    assert groups_in_order != sorted(groups_in_order)


def test_small_group_forms_its_own_smaller_batch():
    labels = np.array([0] * 100 + [1] * 3)
    batches = _check_epoch(ClusterBatchSampler(labels, 64, seed=0), labels, 103)
    assert sorted(len(b) for b in batches) == [3, 50, 50]


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_ranks_share_the_group_and_partition_the_epoch(world):
    labels = np.random.default_rng(4).integers(0, 5, 777)
    samplers = [ClusterBatchSampler(labels, 60, seed=9, rank=r, world_size=world) for r in range(world)]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1, "all ranks take the same number of steps"
    seen = []
    for step in zip(*per_rank, strict=True):
        assert len({labels[i] for part in step for i in part}) == 1, "all ranks draw from one group per step"
        seen.extend(np.concatenate(step).tolist())
    assert sorted(seen) == list(range(777)), "no duplicates, no drops across ranks"


def test_random_batch_sampler_covers_everything():
    sampler = RandomBatchSampler(130, 32, seed=0)
    assert sorted(np.concatenate(list(sampler)).tolist()) == list(range(130))


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


@pytest.mark.parametrize("high", [3, 70_000, 5_000_000_000])  # one, two and three 16-bit digits
def test_stable_group_order_is_a_stable_argsort(high):
    labels = np.random.default_rng(7).integers(0, high, 3000)
    assert np.array_equal(stable_group_order(labels), np.argsort(labels, kind="stable"))


def test_split_sizes_match_array_split():
    totals, parts = np.array([10, 3, 7, 64]), np.array([3, 1, 7, 5])
    offsets, sizes = split_sizes(totals, parts)
    expected = [(len(np.concatenate(p[:i])) if i else 0, len(p[i]))
                for t, n in zip(totals, parts, strict=True)
                for p in [np.array_split(np.arange(t), n)] for i in range(n)]
    assert list(zip(offsets.tolist(), sizes.tolist(), strict=True)) == expected


def test_group_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="min_group_size"):
        ClusterBatchSampler(np.array([0] * 10 + [1] * 2), batch_size=8, world_size=3)


def test_epoch_layout_of_a_large_set_covers_it_once():
    labels = np.random.default_rng(8).integers(0, 50, 2_000_000)
    sampler = ClusterBatchSampler(labels, 512, seed=0)
    layout = sampler.epoch_layout()
    assert len(layout) == len(sampler)
    assert np.array_equal(np.sort(layout.order), np.arange(len(labels)))
    first = layout.batch(0)
    assert len(set(labels[first].tolist())) == 1 and len(first) <= 512
