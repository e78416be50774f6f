"""GroupBucketingStream: exactly-once single-group batches from shards, per epoch, rank and worker."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.shards import decode_ids, id_images
from mcl.data.stream import GroupBucketingStream, StreamLoader, plan_epoch
from mcl.data.table import write_table
from mcl.data.webdataset import ShardIndex, index_shards
from mcl.errors import DataError

N_TRAIN = 150


def write_id_shards(root: Path, n: int, shard_size: int, n_test: int) -> Path:
    split = ["train"] * (n - n_test) + ["test"] * n_test
    return write_table(root, id_images(n), {}, split, format="webdataset", shard_size=shard_size)


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(id_images(value + 1, 8)[value]).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> ShardIndex:
    return index_shards(write_id_shards(tmp_path_factory.mktemp("stream") / "s", n=N_TRAIN + 10, shard_size=12,
                                        n_test=10))


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 5, N_TRAIN)


def epoch_batches(stream: GroupBucketingStream, epoch: int) -> list[torch.Tensor]:
    stream.set_epoch(epoch)
    return [batch["index"] for batch in stream]


def check_exactly_once(batches: list[np.ndarray], n: int) -> None:
    seen = np.concatenate(batches)
    assert np.array_equal(np.sort(seen), np.arange(n)), "every sample exactly once per epoch"


def test_plan_every_sample_once_single_group_reproducible_bounded() -> None:
    shard_of = np.repeat(np.arange(40), 25)  # 1000 samples in 40 shards
    labels = np.random.default_rng(0).integers(0, 7, 1000)
    plans = {}
    for epoch in (0, 1):
        plan = plan_epoch(shard_of, labels, 32, seed=5, epoch=epoch, shuffle_buffer=64)
        batches = [plan.batch(b) for b in range(len(plan))]
        check_exactly_once(batches, 1000)
        assert all(len(np.unique(labels[b])) == 1 for b in batches) and max(map(len, batches)) <= 32
        assert plan.high_water <= 64 + 7 * 32
        # A batch is complete once its ready index is read.
        read_index = np.argsort(plan.read_order)
        assert all(read_index[plan.batch(b)].max() <= plan.ready[b] for b in range(len(plan)))
        plans[epoch] = plan
    again = plan_epoch(shard_of, labels, 32, seed=5, epoch=0, shuffle_buffer=64)
    assert np.array_equal(again.members, plans[0].members) and np.array_equal(again.sizes, plans[0].sizes)
    assert not np.array_equal(plans[0].read_order, plans[1].read_order)  # shard order reshuffled per epoch
    assert not np.array_equal(plans[0].members, plans[1].members)
    assert not np.array_equal(plan_epoch(shard_of, labels, 32, seed=6, epoch=0, shuffle_buffer=64).members,
                              plans[0].members)


def test_plan_cap_flushes_the_fullest_buffer_early() -> None:
    shard_of = np.repeat(np.arange(10), 50)
    labels = np.arange(500) % 20  # 20 groups x 32 = 640 could be held; cap at 100
    plan = plan_epoch(shard_of, labels, 32, seed=0, epoch=0, shuffle=False, max_buffered=100)
    check_exactly_once([plan.batch(b) for b in range(len(plan))], 500)
    assert plan.high_water <= 101 and plan.early_flushes > 0
    assert all(len(np.unique(labels[plan.batch(b)])) == 1 for b in range(len(plan)))
    uncapped = plan_epoch(shard_of, labels, 32, seed=0, epoch=0, shuffle=False)
    assert uncapped.high_water > 300 and uncapped.early_flushes == 0


def test_plan_never_leaves_a_rank_without_samples() -> None:
    shard_of = np.zeros(67, dtype=np.int64)
    labels = np.r_[np.zeros(33), np.ones(34)].astype(np.int64)  # 33 = 32 + 1: a remainder of 1 with 2 ranks
    plan = plan_epoch(shard_of, labels, 32, seed=0, epoch=0, world_size=2)
    assert sorted(plan.sizes.tolist()) == [32, 33] or min(plan.sizes) >= 2
    assert min(plan.sizes) >= 2
    with pytest.raises(ValueError, match="fewer than the 2 ranks"):
        plan_epoch(np.zeros(3, dtype=np.int64), np.array([0, 0, 1]), 4, seed=0, epoch=0, world_size=2)


def test_stream_single_group_batches_exact_len_and_aligned_pixels(index: ShardIndex, labels: np.ndarray) -> None:
    stream = GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=16, pseudo_labels=labels,
                                  seed=1, shuffle_buffer=20)
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        batches = list(stream)
        assert len(batches) == len(stream)
        check_exactly_once([b["index"].numpy() for b in batches], N_TRAIN)
        for batch in batches:
            assert len(np.unique(labels[batch["index"].numpy()])) == 1 and len(batch["index"]) <= 16
            assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (8, 8, 3)
            # Key alignment after shard shuffle, shuffle buffer and routing: the pixels are the sample's own.
            assert decode_ids(batch["image"].numpy()).tolist() == batch["index"].tolist()
        assert stream.stats.high_water_samples <= stream.bound()
    first = [b.tolist() for b in epoch_batches(stream, 0)]
    assert first == [b.tolist() for b in epoch_batches(stream, 0)]  # reproducible per (seed, epoch)
    assert first != [b.tolist() for b in epoch_batches(stream, 1)]


def test_stage_one_plain_shuffled_batches(index: ShardIndex) -> None:
    stream = GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=32, seed=0, shuffle_buffer=40)
    batches = epoch_batches(stream, 0)
    assert [len(b) for b in batches] == [32, 32, 32, 32, 22]
    check_exactly_once([b.numpy() for b in batches], N_TRAIN)
    assert not np.array_equal(torch.cat(batches).numpy(), np.arange(N_TRAIN))
    ordered = GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=32, shuffle=False)
    assert torch.cat(epoch_batches(ordered, 3)).tolist() == list(range(N_TRAIN))  # e.g. the embedding pass


def test_two_ranks_partition_every_global_batch_and_agree_on_its_group(index: ShardIndex,
                                                                       labels: np.ndarray) -> None:
    ranks = [GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=16, pseudo_labels=labels,
                                  seed=2, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [epoch_batches(stream, 4) for stream in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])  # the same number of steps
    check_exactly_once([b.numpy() for batches in per_rank for b in batches], N_TRAIN)
    for step0, step1 in zip(*per_rank, strict=True):
        assert len(step0) and len(step1) and abs(len(step0) - len(step1)) <= 1
        assert len(np.unique(labels[torch.cat([step0, step1]).numpy()])) == 1  # the global batch is single-group


def test_workers_partition_the_batches_and_keep_the_plan_order(index: ShardIndex, labels: np.ndarray) -> None:
    stream = GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=16, pseudo_labels=labels,
                                  seed=1)
    single = [b["index"].tolist() for b in _loader_epoch(StreamLoader(stream, "cpu", workers=0), 2)]
    loader = StreamLoader(stream, "cpu", workers=2)
    batches = list(_loader_epoch(loader, 2))
    assert [b["index"].tolist() for b in batches] == single and len(batches) == len(loader)
    assert all(decode_ids(b["image"].numpy()).tolist() == b["index"].tolist() for b in batches)
    check_exactly_once([b["index"].numpy() for b in batches], N_TRAIN)


def _loader_epoch(loader: StreamLoader, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_bad_image_in_the_stream(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for name, data in [("k0.jpg", jpeg(0)), ("k1.jpg", b"broken"), ("k2.jpg", jpeg(2)), ("k3.jpg", jpeg(3))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = index_shards(tmp_path / "a.tar")
    with pytest.raises(DataError, match=r"a\.tar#k1: image cannot be read"):
        epoch_batches(GroupBucketingStream(index, index.ids(), image_size=8, batch_size=4), 0)
    stream = GroupBucketingStream(index, index.ids(), image_size=8, batch_size=4, on_bad_image="skip")
    batches = epoch_batches(stream, 0)
    assert sorted(torch.cat(batches).tolist()) == [0, 2, 3] and stream.stats.decode.skipped == [f"{tmp_path}/a.tar#k1"]


def test_the_trainer_runs_on_a_stream_with_pseudo_labels(index: ShardIndex, labels: np.ndarray,
                                                         tmp_path: Path) -> None:
    from mcl.config import TrainConfig
    from mcl.files import read_jsonl
    from mcl.training import METRICS, train

    groups_seen: list[int] = []

    def loss(model: torch.nn.Module, batch: dict, batch_labels: torch.Tensor | None) -> torch.Tensor:
        assert batch_labels is not None and bool((batch_labels == batch_labels[0]).all())
        groups_seen.append(int(batch_labels[0]))
        return model(batch["image"].float().mean(dim=(1, 2)) / 255).pow(2).mean()

    stream = GroupBucketingStream(index, index.ids("train"), image_size=8, batch_size=16, pseudo_labels=labels)
    loader = StreamLoader(stream, "cpu")
    train(torch.nn.Linear(3, 2), loss, loader, TrainConfig(epochs=2, batch_size=16, lr=0.01), tmp_path,
          torch.as_tensor(labels), progress=False)
    steps = [record["steps"] for record in read_jsonl(tmp_path / METRICS)]
    expected = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        expected.append(len(stream))
    assert steps == expected and len(groups_seen) == sum(steps)  # len() was exact: the LR schedule's steps
