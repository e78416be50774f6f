"""``torchrun --nproc_per_node 2 -m mcl train``: two gloo ranks on CPU, end to end.

The two ranks compute BatchNorm statistics on their own half of every batch, so the trained
weights (and hence the clusters) are not bitwise those of a 1-process run. What is rank-invariant
and checked here instead: every epoch took exactly the steps that visit each sample once
(``len(ClusterBatchSampler)`` of the recorded pseudo-labels), the stage-2 pseudo-labels are exactly
what the recorded stage-1 clusters give, only rank 0 wrote (one metrics line per epoch, a manifest
whose checksums all hold), and the run is complete.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcl.config import load_config
from mcl.embedding_file import open_embeddings
from mcl.files import load_arrays
from mcl.run import EMBEDDINGS_FILE, RunDirectory
from mcl.sampling import ClusterBatchSampler
from mcl.stages import StageHistory, next_pseudo_labels
from test_cli import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torchrun_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mcl", "train", "configs/demo.yaml", "--out", str(out), "--quiet", *TINY]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 2 stages") == 2, "both ranks finished"
    return out


def _metrics(stage_dir):
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_every_stage_finished_and_only_rank_0_wrote(torchrun_dir):
    config = load_config(torchrun_dir / "config.yaml")
    run = RunDirectory(torchrun_dir)
    recorded = [torchrun_dir / name for name in run.read_manifest()["files"]]
    assert run.is_finished(*recorded), "every recorded checksum holds"
    for directory in ("stage-1", "stage-2", "ensemble-2"):
        assert torchrun_dir / directory / "encoder.safetensors" in recorded
        assert len(_metrics(torchrun_dir / directory)) == config.train.epochs, "one writer: one line per epoch"
        assert not (torchrun_dir / directory / "checkpoint.safetensors").exists()
    for stage in ("stage-1", "stage-2"):  # each rank wrote its shard of the embeddings into one recorded file
        assert torchrun_dir / stage / EMBEDDINGS_FILE in recorded
        embeddings = open_embeddings(torchrun_dir / stage / EMBEDDINGS_FILE, config.data.n_train)
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5), "every row written (unit norm)"
    leftovers = [p for p in torchrun_dir.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not leftovers


@pytest.mark.slow
def test_steps_visit_every_sample_once_and_pseudo_labels_follow_the_clusters(torchrun_dir):
    config = load_config(torchrun_dir / "config.yaml")
    n_train = config.data.n_train
    assert _metrics(torchrun_dir / "stage-1")[0]["steps"] == math.ceil(n_train / config.train.batch_size)

    clusters = load_arrays(torchrun_dir / "stage-1" / "clusters.safetensors")
    assert clusters["labels"].shape == (n_train,), "rank 0 clustered both ranks' embeddings of all samples"
    history = StageHistory(cluster_labels=[clusters["labels"]], centroids=[clusters["centroids"]])
    expected, _ = next_pseudo_labels(history, config)
    pseudo_labels = load_arrays(torchrun_dir / "stage-2" / "pseudo_labels.safetensors")["pseudo_labels"]
    assert np.array_equal(pseudo_labels, expected)
    steps = len(ClusterBatchSampler(pseudo_labels, config.train.batch_size))
    assert _metrics(torchrun_dir / "stage-2")[0]["steps"] == steps
