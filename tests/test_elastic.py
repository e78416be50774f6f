"""torchrun ``--max-restarts 1``: rank 1 killed in the middle of stage 2 restarts, and the run ends as if never killed.

Two 2-rank gloo runs of the same tiny config (CPU, one thread per rank) train the same run directory
layout: one uninterrupted, one whose rank 1 SIGKILLs itself in stage 2's second epoch, after the
epoch-1 checkpoint (``tests/elastic_worker.py``, through the public ``fit=`` hook). torchrun then stops
rank 0 and starts both ranks again; they load the finished stage 1, its clusters and the stage-2
pseudo-labels from the manifest and resume stage 2 from its checkpoint. The restarted ranks must first
rejoin a process group whose store still holds the dead attempt's addresses
(:func:`mcl.distributed.init_process_group`; the worker delays rank 0 so that this is always exercised).

What is guaranteed, and asserted: the two runs are equal *bitwise*: the stage-1 weights and clusters,
the stage-2 pseudo-labels, the stage-2 weights, the stage-2 clusters and the per-epoch losses. Bitwise
holds for the resumed stage because everything the remaining steps depend on is restored exactly: the
weights and BatchNorm buffers (rank 0's; DDP broadcasts rank 0's buffers at every forward, so rank 1's
own running statistics never mattered), the optimiser moments, the batches (a function of seed and
epoch), and each rank's own torch RNG stream (:func:`mcl.training.rank_rng_states`), which draws that
rank's augmentations. The 2-rank weights differ from a 1-process run's (per-rank BatchNorm batch
statistics, see ``test_torchrun.py``), so the reference is a 2-rank run too.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcl.files import load_tensors

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).resolve().parent / "elastic_worker.py")
# 96 images in global batches of 32: 3 steps per epoch, 2 epochs, so the epoch-1 checkpoint exists mid-stage.
TINY = ["data.image_size=16", "model.width=0.25", "model.hidden_dim=32", "model.projection_dim=16",
        "train.epochs=2", "train.batch_size=32", "mcl.stages=2", "mcl.clusters=3", "mcl.min_group_size=4",
        "mcl.kmeans_restarts=1", "eval.ensemble=false"]
FILES = ["stage-1/encoder.safetensors", "stage-1/clusters.safetensors", "stage-2/pseudo_labels.safetensors",
         "stage-2/encoder.safetensors", "stage-2/clusters.safetensors"]


def torchrun(out: Path, data: Path, kill_stage: str | None = None) -> subprocess.Popen:
    """Start a 2-rank run (``--standalone`` picks a free rendezvous port, so runs may overlap).

    With ``kill_stage`` rank 1 dies once in that stage and torchrun may restart the workers once.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    sets = [arg for key in TINY for arg in ("--set", key)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--monitor-interval", "0.5", "--max-restarts", "1" if kill_stage else "0", WORKER, str(out), str(data),
               *sets, *(["--kill-stage", kill_stage] if kill_stage else [])]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: torchrun and its workers end together


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mcl.data.trifeature import generate_trifeature

    data = generate_trifeature(tmp_path_factory.mktemp("data"), n_train=96, n_test=48, image_size=16, seed=0)
    reference, resumed = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("resumed")
    # Both runs at once (separate rendezvous ports): the whole test took 40-46 s on two busy cores.
    processes = [torchrun(reference, data), torchrun(resumed, data, kill_stage="stage-2")]
    try:
        return reference, finish(processes[0]), resumed, finish(processes[1])
    finally:
        for process in processes:  # after a failure, never leave the other run behind
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()


@pytest.mark.slow
def test_killed_rank_restarts_and_resumes_stage_2_from_its_checkpoint(runs):
    _, reference_log, resumed, resumed_log = runs
    assert "attempt 1" not in reference_log
    for rank in (0, 1):
        assert f"elastic: rank {rank} attempt 0 stage-2 checkpoint=no" in resumed_log
        assert f"elastic: rank {rank} attempt 1 stage-2 checkpoint=yes" in resumed_log, "resumed, not restarted"
        assert f"elastic: rank {rank} attempt 1 stage-1" not in resumed_log, "finished stage 1 was loaded"
        assert f"elastic: rank {rank} attempt 1 finished" in resumed_log
    assert f"elastic: rank {rank} attempt 0 finished" not in resumed_log
    assert not (resumed / "stage-2" / "checkpoint.safetensors").exists()


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one_bitwise(runs):
    reference, _, resumed, _ = runs
    for name in FILES:
        expected, got = load_tensors(reference / name), load_tensors(resumed / name)
        assert expected.keys() == got.keys(), name
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key} differs"
    for stage in ("stage-1", "stage-2"):
        losses = [[json.loads(line)["loss"] for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
                  for run in (reference, resumed)]
        assert losses[0] == losses[1] and len(losses[0]) == 2, stage
