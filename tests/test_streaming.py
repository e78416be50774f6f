"""Streamed images (decoded per batch, in DataLoader workers) train exactly like resident ones."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mcl
from mcl.data.images import DiskImages, TrainingImages, choose_residency
from mcl.data.table import load_table
from mcl.data.trifeature import generate_trifeature
from mcl.files import load_tensors, read_jsonl
from mcl.sampling import ClusterBatchSampler

TINY = {
    "seed": 0,
    "model": {"backbone": "convnet", "width": 0.25, "projection_dim": 16, "hidden_dim": 32},
    "train": {"epochs": 1, "batch_size": 32, "threads": 1},
    "mcl": {"stages": 2, "clusters": 3, "min_group_size": 8, "kmeans_restarts": 1},
    "eval": {"ensemble": False},
}


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_trifeature(tmp_path_factory.mktemp("tri") / "t", n_train=96, n_test=32, image_size=16, seed=0,
                               progress=False)


def test_disk_images_decode_like_the_resident_table(table_dir: Path) -> None:
    resident = load_table(table_dir, 16, progress=False)
    streamed = load_table(table_dir, 16, progress=False, stream=True)
    assert isinstance(streamed.images, DiskImages) and streamed.images.shape == resident.images.shape
    rows = np.array([5, 0, 77])
    assert np.array_equal(np.asarray(streamed.images[rows]), resident.images[rows])
    test = streamed.subset("test")
    assert np.array_equal(np.asarray(test.images), resident.subset("test").images)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_resident_batches(table_dir: Path, workers: int) -> None:
    resident = TrainingImages(load_table(table_dir, 16, progress=False).images, torch.device("cpu"))
    streamed = TrainingImages(load_table(table_dir, 16, progress=False, stream=True).images, torch.device("cpu"),
                              workers=workers)
    labels = np.arange(128) % 3
    for epoch in (0, 1):
        pairs = []
        for images in (resident, streamed):
            loader = images.loader(ClusterBatchSampler(labels, 16, seed=3))
            loader.set_epoch(epoch)
            pairs.append(list(loader))
        assert len(pairs[0]) == len(pairs[1]) == 9
        for a, b in zip(*pairs, strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    rows = np.arange(40)
    assert all(torch.equal(a, b) for a, b in zip(resident.batches(rows), streamed.batches(rows), strict=True))


@pytest.mark.slow
def test_stream_and_memory_runs_are_identical(table_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for residency, workers in (("memory", 0), ("stream", 2)):
        out = tmp_path / residency
        config = {**TINY, "data": {"source": "table", "path": str(table_dir), "image_size": 16,
                                   "residency": residency, "workers": workers}}
        mcl.train(config, out=out, progress=False)
        runs[residency] = out
    for member in ("stage-1", "stage-2"):
        a = load_tensors(runs["memory"] / member / "encoder.safetensors")
        b = load_tensors(runs["stream"] / member / "encoder.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), member
    assert mcl.evaluate(runs["stream"], progress=False)["rows"] == mcl.evaluate(runs["memory"], progress=False)["rows"]


def test_max_steps_caps_each_stage(table_dir: Path, tmp_path: Path) -> None:
    config = {**TINY, "data": {"source": "table", "path": str(table_dir), "image_size": 16},
              "train": {**TINY["train"], "epochs": 3, "max_steps": 4}, "mcl": {**TINY["mcl"], "stages": 1}}
    mcl.train(config, out=tmp_path / "run", progress=False)
    metrics = read_jsonl(tmp_path / "run" / "stage-1" / "metrics.jsonl")
    assert [m["steps"] for m in metrics] == [3, 1]  # 96 images / 32 = 3 steps an epoch; the cap stops at 4


def test_auto_residency_follows_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcl")
    one_image = 32 * 32 * 3
    assert choose_residency("auto", 1000, 32, 1000 * one_image / 1e9, torch.device("cpu")) == "memory"
    assert choose_residency("auto", 1001, 32, 1000 * one_image / 1e9, torch.device("cpu")) == "stream"
    assert choose_residency("stream", 10, 32, None, torch.device("cpu")) == "stream"
    assert "data residency: stream (auto: decoded set" in caplog.text


@pytest.mark.slow
def test_webdataset_shards_train_like_the_same_jpeg_table(tmp_path: Path) -> None:
    """The same JPEGs as a table and as shards, resident and streamed: identical stages, identical eval rows."""
    from mcl.cli import main

    options = ["--n-train", "96", "--n-test", "32", "--image-size", "16", "--quiet"]
    assert main(["generate", "trifeature", "--out", str(tmp_path / "jpeg"), "--format", "jpeg", *options]) == 0
    assert main(["generate", "trifeature", "--out", str(tmp_path / "shards"), "--format", "webdataset",
                 "--shard-size", "40", *options]) == 0
    runs = {}
    for name, data, residency in (("table", "jpeg", "memory"), ("shards-memory", "shards", "memory"),
                                  ("shards-stream", "shards", "stream")):
        config = {**TINY, "data": {"source": "table", "path": str(tmp_path / data), "image_size": 16,
                                   "residency": residency, "workers": 0}}
        mcl.train(config, out=tmp_path / name, progress=False)
        runs[name] = tmp_path / name
    for member in ("stage-1", "stage-2"):
        reference = load_tensors(runs["table"] / member / "encoder.safetensors")
        for name in ("shards-memory", "shards-stream"):
            other = load_tensors(runs[name] / member / "encoder.safetensors")
            assert all(torch.equal(reference[k], other[k]) for k in reference), (name, member)
    rows = mcl.evaluate(runs["shards-stream"], progress=False)["rows"]
    assert rows == mcl.evaluate(runs["table"], progress=False)["rows"]


# ---- data.shard_order: sequential (shards read front to back, batches from mcl.data.stream)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 Trifeature JPEGs (96 train, 32 test) in WebDataset shards of 20 samples."""
    from mcl.cli import main

    out = tmp_path_factory.mktemp("shards") / "s"
    assert main(["generate", "trifeature", "--out", str(out), "--format", "webdataset", "--shard-size", "20",
                 "--n-train", "96", "--n-test", "32", "--image-size", "16", "--quiet"]) == 0
    return out


def shard_training_images(shard_dir: Path, order: str, workers: int = 0) -> TrainingImages:
    from mcl.data.sources import open_source

    table = open_source(shard_dir, 16, stream=True, progress=False).subset("train")
    return TrainingImages(table.images, torch.device("cpu"), workers=workers, seed=0, shard_order=order)


def epoch_indices(loader, epoch: int) -> list[np.ndarray]:
    loader.set_epoch(epoch)
    return [batch["index"].numpy() for batch in loader]


def test_sequential_shard_order_streams_single_group_batches(shard_dir: Path) -> None:
    from mcl.data.stream import StreamLoader
    from mcl.sampling import RandomBatchSampler

    sequential, random = shard_training_images(shard_dir, "sequential"), shard_training_images(shard_dir, "random")
    labels = np.arange(96) % 5
    sampler = ClusterBatchSampler(labels, 16, seed=3)
    loader = sequential.loader(sampler)
    assert isinstance(loader, StreamLoader)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == len(sampler)  # exact len: the LR schedule's steps, as random order's
        index = np.concatenate([batch["index"].numpy() for batch in batches])
        assert np.array_equal(np.sort(index), np.arange(96)), "every sample exactly once per epoch"
        assert all(len(np.unique(labels[batch["index"].numpy()])) == 1 for batch in batches)
        # "index" is a training-set row: its pixels are that row's (the random-order path decodes the same row)
        first = batches[0]
        assert torch.equal(first["image"], next(random.batches(first["index"].numpy())))
    assert [b.tolist() for b in epoch_indices(loader, 1)] == [b.tolist() for b in epoch_indices(loader, 1)]
    assert epoch_indices(loader, 0)[0].tolist() != epoch_indices(loader, 1)[0].tolist()  # reshuffled per epoch

    plain = sequential.loader(RandomBatchSampler(96, 32, seed=3))  # stage 1 and mcl.negatives: mask
    assert len(plain) == len(RandomBatchSampler(96, 32, seed=3)) == 3
    assert np.array_equal(np.sort(np.concatenate(epoch_indices(plain, 0))), np.arange(96))


def test_sequential_shard_order_gives_each_rank_its_slice_of_every_global_batch(shard_dir: Path) -> None:
    images = shard_training_images(shard_dir, "sequential")
    labels = np.arange(96) % 3
    ranks = [epoch_indices(images.loader(ClusterBatchSampler(labels, 16, seed=1, rank=r, world_size=2)), 0)
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(ClusterBatchSampler(labels, 16, seed=1))
    for a, b in zip(*ranks, strict=True):
        assert len(np.unique(labels[np.concatenate([a, b])])) == 1  # one group per global step, across ranks
    assert np.array_equal(np.sort(np.concatenate(ranks[0] + ranks[1])), np.arange(96))


def test_sequential_shard_order_needs_streamed_shards(shard_dir: Path, table_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mcl.cli import main
    from mcl.config import config_from_dict
    from mcl.errors import ConfigError

    with pytest.raises(ConfigError, match="'data.shard_order'.*image table or folder"):
        TrainingImages(load_table(table_dir, 16, progress=False, stream=True).images, torch.device("cpu"),
                       shard_order="sequential")
    with pytest.raises(ConfigError, match="'data.shard_order'.*decoded into memory"):
        TrainingImages(load_table(table_dir, 16, progress=False).images, torch.device("cpu"), shard_order="sequential")
    with pytest.raises(ConfigError, match="needs data.residency: stream, got 'auto'"):
        config_from_dict({"data": {"shard_order": "sequential"}})
    config_from_dict({"data": {"shard_order": "sequential", "residency": "stream"}})
    for data, residency in ((shard_dir, "memory"), (table_dir, "stream")):  # refused by the config, then at load
        assert main(["train", "configs/demo.yaml", "--data", str(data), "--out", str(tmp_path / residency), "--quiet",
                     "--set", "train.batch_size=32", "--set", "data.shard_order=sequential",
                     "--set", f"data.residency={residency}"]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("mcl: error: config key 'data.shard_order': 'sequential'"), error


def sequential_config(shard_dir: Path, workers: int) -> dict:
    return {**TINY, "data": {"source": "table", "path": str(shard_dir), "image_size": 16, "residency": "stream",
                             "shard_order": "sequential", "workers": workers},
            "train": {**TINY["train"], "epochs": 2}, "eval": {"ensemble": False, "references": False}}


@pytest.fixture(scope="module")
def sequential_run(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-stage, 2-epoch run with shard_order=sequential; its fit records every batch's indices and len(loader)."""
    from mcl.data.stream import StreamLoader
    from mcl.training import train

    seen: dict[str, list[np.ndarray]] = {}
    steps: dict[str, int] = {}

    def recording_fit(model, loss_fn, loader, config, stage_dir, pseudo_labels=None, stage_name="stage",
                      progress=True, extra_state=None):
        def loss(model, batch, labels):
            seen.setdefault(stage_name, []).append(batch["index"].numpy().copy())
            if labels is not None:
                assert bool((labels == labels[0]).all()), "a stage-2 batch mixes pseudo-label groups"
            return loss_fn(model, batch, labels)

        assert isinstance(loader, StreamLoader), "shard_order=sequential trains from the shard stream"
        steps[stage_name] = len(loader)
        train(model, loss, loader, config, stage_dir, pseudo_labels, stage_name, progress, extra_state)

    out = tmp_path_factory.mktemp("sequential") / "run"
    mcl.train(sequential_config(shard_dir, workers=0), out=out, progress=False, fit=recording_fit)
    return out, seen, steps


RUN_FILES = ("stage-1/encoder.safetensors", "stage-1/clusters.safetensors", "stage-2/pseudo_labels.safetensors",
             "stage-2/encoder.safetensors", "stage-2/clusters.safetensors")


def assert_same_files(a: Path, b: Path) -> None:
    for name in RUN_FILES:
        ours, theirs = load_tensors(a / name), load_tensors(b / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name


@pytest.mark.slow
def test_sequential_shard_order_trains_every_stage_from_the_stream(sequential_run, shard_dir: Path,
                                                                   tmp_path: Path) -> None:
    """``mcl train`` on shards with shard_order=sequential: stage 2's batches are single-group, every epoch visits
    every sample once, and the run is reproducible (0 or 2 workers: the same pseudo-labels and weights)."""
    out, seen, steps = sequential_run
    labels = load_tensors(out / "stage-2" / "pseudo_labels.safetensors")["pseudo_labels"].numpy()
    assert len(np.unique(labels)) > 1
    for stage in ("stage-1", "stage-2"):
        batches = seen[stage]
        assert len(batches) == 2 * steps[stage]  # two epochs of exactly len(loader) steps
        for epoch in (batches[: steps[stage]], batches[steps[stage] :]):
            assert np.array_equal(np.sort(np.concatenate(epoch)), np.arange(96)), (stage, "exactly once")
    assert all(len(np.unique(labels[batch])) == 1 for batch in seen["stage-2"])
    assert steps["stage-2"] == len(ClusterBatchSampler(labels, 32))  # the same step count as random shard order
    metrics = read_jsonl(out / "stage-2" / "metrics.jsonl")
    assert [m["steps"] for m in metrics] == [steps["stage-2"]] * 2

    mcl.train(sequential_config(shard_dir, workers=2), out=tmp_path / "workers", progress=False)
    assert_same_files(out, tmp_path / "workers")


@pytest.mark.slow
def test_sequential_shard_order_run_killed_and_resumed_is_the_same_run(sequential_run, shard_dir: Path,
                                                                       tmp_path: Path) -> None:
    """SIGKILL in stage 1's second epoch and after stage 2's first epoch: the resumed run equals the reference
    bit for bit (the stream's plan is seeded by (seed, epoch), so the resumed epochs get the same batches)."""
    import signal
    import subprocess
    import sys

    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sequential_config(shard_dir, workers=0)))
    out = tmp_path / "run"
    src = str(Path(__file__).resolve().parents[1] / "src")
    for kill_at in ("step:5", "epoch:2", None):  # 3 steps an epoch: the first kill is in stage 1, epoch 2
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        env.pop("MCL_TEST_KILL_AT", None)
        if kill_at:
            env["MCL_TEST_KILL_AT"] = kill_at
        result = subprocess.run([sys.executable, "-m", "mcl", "train", str(config), "--out", str(out), "--quiet"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == (-signal.SIGKILL if kill_at else 0), (kill_at, result.stderr)
    reference = sequential_run[0]
    assert_same_files(out, reference)
    for stage in ("stage-1", "stage-2"):
        ours, theirs = read_jsonl(out / stage / "metrics.jsonl"), read_jsonl(reference / stage / "metrics.jsonl")
        assert [(r["epoch"], r["loss"]) for r in ours] == [(r["epoch"], r["loss"]) for r in theirs]


@pytest.mark.slow
def test_image_folder_trains_and_evaluates_alike_streamed_and_in_memory(table_dir: Path, tmp_path: Path) -> None:
    """``mcl train --data DIR`` on an ImageFolder layout (the table's images filed by shape, links, not copies):
    streamed and resident runs are the same run, and ``mcl eval`` scores the folder's ``class`` attribute."""
    folder = tmp_path / "folder"
    with open(table_dir / "labels.csv", newline="") as handle:
        for record in csv.DictReader(handle):
            target = folder / record["split"] / record["shape"] / Path(record["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(table_dir / record["path"], target)
    root = Path(__file__).resolve().parents[1]
    runs = {}
    for residency in ("memory", "stream"):
        out = tmp_path / residency
        settings = ["data.image_size=16", f"data.residency={residency}", "data.workers=0", "model.width=0.25",
                    "model.projection_dim=16", "model.hidden_dim=32", "train.epochs=1", "train.batch_size=32",
                    "mcl.stages=2", "mcl.clusters=3", "mcl.min_group_size=8", "mcl.kmeans_restarts=1",
                    "eval.ensemble=false", "eval.linear_max_iter=50"]
        command = [sys.executable, "-m", "mcl", "train", "configs/demo.yaml", "--data", str(folder), "--out", str(out),
                   "--quiet", *[arg for setting in settings for arg in ("--set", setting)]]
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
        trained = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr[-2000:]
        evaluated = subprocess.run([sys.executable, "-m", "mcl", "eval", str(out), "--quiet"], cwd=root, env=env,
                                   capture_output=True, text=True, timeout=300)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        runs[residency] = out
    for member in ("stage-1", "stage-2"):
        a = load_tensors(runs["memory"] / member / "encoder.safetensors")
        b = load_tensors(runs["stream"] / member / "encoder.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), member
    rows = {residency: json.loads((runs[residency] / "eval.json").read_text())["rows"] for residency in runs}
    assert rows["memory"] == rows["stream"]
    assert {r["attribute"] for r in rows["stream"]} == {"class"}
    assert {r["representation"] for r in rows["stream"]} >= {"stage-1", "stage-2", "mcl-2"}
