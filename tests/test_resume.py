"""Crash-safety end to end: ``python -m mcl train`` killed with SIGKILL at several points, then resumed.

The run is killed (``MCL_TEST_KILL_AT=<phase>:<n>``, see :mod:`mcl.faults`) in the middle of
a training epoch, after embedding, after k-means, inside an atomic write and between an epoch's
checkpoint and its metrics line, resuming after each kill. The result must equal an uninterrupted run
with the same seed *bitwise*: every tensor of every file, the pseudo-labels, the clusters, the losses
in metrics.jsonl and the eval accuracies (CPU, one thread).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcl.api import evaluate as evaluate_run
from mcl.files import load_tensors, read_jsonl

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = [
    "--quiet", "--set", "data.image_size=16", "--set", "model.width=0.25", "--set", "model.hidden_dim=32",
    "--set", "model.projection_dim=16", "--set", "train.epochs=2", "--set", "train.batch_size=32",
    "--set", "train.threads=1", "--set", "mcl.stages=2", "--set", "mcl.clusters=3",
    "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
    "--set", "eval.references=false", "--set", "eval.linear_max_iter=50",
]
# Each entry kills one process; the next one resumes. 96 images in batches of 32: 3 steps per epoch.
KILLS = [
    "step:5",  # stage 1, in the middle of epoch 2 (the epoch-1 checkpoint is the resume point)
    "embed:1",  # stage 1 finished (resumed from epoch 1), killed after embedding the training set
    "cluster:1",  # k-means of stage 1 done, nothing written yet
    "write:3",  # config.yaml, clusters.json, then inside the write of clusters.safetensors
    "epoch:1",  # stage 2: epoch 1 checkpoint written, its metrics.jsonl line not yet
]
FILES = ["stage-1/encoder.safetensors", "stage-1/clusters.safetensors", "stage-2/pseudo_labels.safetensors",
         "stage-2/encoder.safetensors", "stage-2/clusters.safetensors"]


def mcl_train(args, kill_at=None):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("MCL_TEST_KILL_AT", None)
    if kill_at:
        env["MCL_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "mcl", "train", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mcl.data.trifeature import generate_trifeature

    return generate_trifeature(tmp_path_factory.mktemp("data"), n_train=96, n_test=48, image_size=16, seed=0)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = mcl_train(["configs/demo.yaml", "--data", str(data), "--out", str(out), *TINY])
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_killed_and_resumed_run_equals_an_uninterrupted_one(data, reference, tmp_path):
    out = tmp_path / "run"
    command = ["configs/demo.yaml", "--data", str(data), "--out", str(out), *TINY]
    for kill_at in KILLS:
        resume = ["--resume"] if out.exists() else []
        result = mcl_train(command + resume, kill_at)
        assert result.returncode == -signal.SIGKILL, f"{kill_at} did not kill the run: {result.stderr}"
        if kill_at.startswith("write"):
            assert list(out.glob("stage-1/.clusters.safetensors.*.tmp")), "a half-done write leaves its temp file"
            assert not (out / "stage-1" / "clusters.safetensors").exists()
    assert (out / "stage-2" / "checkpoint.safetensors").exists()
    assert read_jsonl(out / "stage-2" / "metrics.jsonl") == []  # killed between the checkpoint and its line
    result = mcl_train(command)  # a plain re-run of the same command continues too
    assert result.returncode == 0, result.stderr
    assert not list(out.glob("**/.*.tmp"))

    for name in FILES:
        ours, theirs = load_tensors(out / name), load_tensors(reference / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    for stage in ("stage-1", "stage-2"):
        ours, theirs = read_jsonl(out / stage / "metrics.jsonl"), read_jsonl(reference / stage / "metrics.jsonl")
        assert [(r["epoch"], r["loss"]) for r in ours] == [(r["epoch"], r["loss"]) for r in theirs]
        assert [r["epoch"] for r in ours] == [1, 2]
    assert evaluate_run(out, progress=False)["rows"] == evaluate_run(reference, progress=False)["rows"]


@pytest.mark.slow
def test_finished_run_is_not_recomputed(reference):
    before = {p: p.stat().st_mtime_ns for p in reference.glob("stage-*/*.safetensors")}
    result = mcl_train(["--resume", "--out", str(reference), "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "epoch" not in result.stderr and "k-means" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in reference.glob("stage-*/*.safetensors")} == before


@pytest.mark.slow
def test_streamed_run_killed_and_resumed_equals_the_resident_reference(data, reference, tmp_path):
    """Streaming (DataLoader workers decoding from disk) resumes bit for bit like the resident path."""
    out = tmp_path / "stream"
    command = ["configs/demo.yaml", "--data", str(data), "--out", str(out), *TINY, "--set", "data.residency=stream",
               "--set", "data.workers=2"]
    for kill_at in ("step:5", "embed:2"):
        result = mcl_train(command, kill_at)
        assert result.returncode == -signal.SIGKILL, f"{kill_at} did not kill the run: {result.stderr}"
    result = mcl_train(command)
    assert result.returncode == 0, result.stderr
    for name in FILES:
        ours, theirs = load_tensors(out / name), load_tensors(reference / name)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
