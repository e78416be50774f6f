import numpy as np
import pytest

from mcl.data.stream import plan_epoch
from mcl.sampling import (
    ClusterBatchSampler,
    GroupBuffers,
    RandomBatchSampler,
    rank_slices,
    split_sizes,
    stable_group_order,
)


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


@pytest.mark.parametrize("world", [1, 2])
def test_the_sampler_and_the_stream_plan_agree_where_every_group_fits_one_batch(world):
    """The planner's two cuts meet where a group is one batch: the same batches, one per group."""
    labels = np.random.default_rng(9).integers(0, 12, 300)  # ~25 per group, batch 32: one batch each
    sampler = ClusterBatchSampler(labels, 32, seed=4, world_size=world)
    whole = sampler.epoch_layout()
    shard_of = np.repeat(np.arange(6), 50)
    for kwargs in ({"shuffle_buffer": 64}, {"shuffle": False}):
        plan = plan_epoch(shard_of, labels, 32, seed=4, epoch=0, world_size=world, **kwargs)
        assert len(plan) == len(whole) == len(sampler) == 12
        as_sets = sorted(sorted(batch.tolist()) for batch in (plan.batch(b) for b in range(len(plan))))
        assert as_sets == sorted(sorted(whole.batch(b).tolist()) for b in range(len(whole)))


def test_both_cuts_slice_global_batches_for_the_ranks_alike():
    labels = np.random.default_rng(10).integers(0, 5, 700)
    world = 3
    layout = ClusterBatchSampler(labels, 60, seed=2).epoch_layout()
    for rank in range(world):
        sampler = ClusterBatchSampler(labels, 60, seed=2, rank=rank, world_size=world)
        offsets, sizes = rank_slices(layout.sizes, rank, world)
        expected = [layout.batch(b)[o : o + k] for b, (o, k) in enumerate(zip(offsets, sizes, strict=True))]
        assert all(np.array_equal(a, e) for a, e in zip(sampler, expected, strict=True))
    plan = plan_epoch(np.zeros(700, dtype=np.int64), labels, 60, seed=2, epoch=0, world_size=world)
    slices = [rank_slices(plan.sizes, rank, world) for rank in range(world)]
    for b in range(len(plan)):  # the ranks' slices partition every batch, none empty
        assert sum(int(sizes[b]) for _, sizes in slices) == plan.sizes[b] and min(s[b] for _, s in slices) >= 1
        assert [int(offsets[b]) for offsets, _ in slices] == sorted(int(offsets[b]) for offsets, _ in slices)


def test_group_buffers_emit_full_batches_then_the_remainders():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 2, 1, 0])
    buffers = GroupBuffers(np.bincount(labels), batch_size=3, world_size=1, cap=len(labels))
    for t, group in enumerate(labels.tolist()):
        buffers.add(t, group, ready=t)
    assert buffers.batches == [[0, 2, 3], [1, 4, 8], [5, 6, 9]] and buffers.ready == [3, 8, 9]
    buffers.flush(buffers.pending(), ready=len(labels))
    assert buffers.batches[-1] == [7] and buffers.groups == [0, 1, 0, 2] and buffers.held == 0
    with pytest.raises(ValueError, match="min_group_size"):
        GroupBuffers(np.array([5, 1]), batch_size=4, world_size=2, cap=10)
