"""Streamed images (decoded per batch, in DataLoader workers) train exactly like resident ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import mcl
from mcl.data.images import DiskImages, TrainingImages, choose_residency
from mcl.data.table import load_table
from mcl.data.trifeature import generate_trifeature
from mcl.io import load_tensors, read_jsonl
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
