"""Trackers against the real libraries, offline: MLflow (local store), wandb (WANDB_MODE=offline), TensorBoard."""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import pytest

from mcl.cli import main
from mcl.errors import ConfigError
from mcl.logging_utils import emit_metrics, metrics_logging

RECORDS = [{"stage": "stage-1", "epoch": 1, "loss": 2.5, "lr": 0.1, "images_per_s": 100.0},
           {"stage": "stage-1", "epoch": 2, "loss": 1.25, "lr": 0.05, "images_per_s": 110.0},
           {"stage": "stage-2", "epoch": 1, "loss": 3.125, "lr": 0.1, "images_per_s": 90.0}]


def _mlflow_run(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mcl")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def _written(path: Path, needle: bytes, timeout: float = 60.0) -> bytes:
    """``path``'s bytes once they hold ``needle``: wandb's service writes the record log after finish() returns."""
    deadline = time.monotonic() + timeout
    while needle not in (data := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return data


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_mlflow_writes_a_local_store_in_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 3\ntrain:\n  lr: 0.002\n")
    with metrics_logging(["mlflow"], run_dir):
        for record in RECORDS:
            emit_metrics(record)
    client, run = _mlflow_run(f"sqlite:///{run_dir / 'mlflow.db'}")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    history = client.get_metric_history(run.info.run_id, "stage-1/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 1.25)]
    assert client.get_metric_history(run.info.run_id, "stage-2/loss")[0].value == 3.125
    assert run.data.params == {"seed": "3", "train.lr": "0.002"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing outside the run directory


def test_mlflow_honours_the_tracking_uri(tmp_path: Path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with metrics_logging(["mlflow"], tmp_path / "run"):
        emit_metrics(RECORDS[0])
    client, run = _mlflow_run(uri)
    assert client.get_metric_history(run.info.run_id, "stage-1/lr")[0].value == 0.1
    assert not (tmp_path / "run" / "mlflow.db").exists()


def test_wandb_offline_writes_a_run_with_the_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with metrics_logging(["wandb"], run_dir):
        for record in RECORDS:
            emit_metrics(record)
    (log,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = _written(Path(log), b"stage-2/loss")  # wandb's record log: protobuf rows, keys and JSON values as bytes
    for needle in (b"stage-1/loss", b"stage-2/loss", b"1.25", b"3.125"):
        assert needle in data


def test_several_trackers_at_once_and_an_unknown_one(tmp_path: Path) -> None:
    with metrics_logging(["tensorboard", "mlflow"], tmp_path):
        emit_metrics(RECORDS[0])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "mlflow.db").exists()
    with pytest.raises(ConfigError, match="expected one of tensorboard, mlflow, wandb"), \
            metrics_logging(["comet"], tmp_path):
        pass


@pytest.mark.slow
def test_mcl_train_logs_to_mlflow_and_wandb(tmp_path: Path) -> None:
    tiny = ["--set", "data.n_train=48", "--set", "data.n_test=16", "--set", "data.image_size=16",
            "--set", "model.width=0.25", "--set", "model.hidden_dim=16", "--set", "model.projection_dim=8",
            "--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "mcl.stages=2",
            "--set", "mcl.clusters=2", "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1",
            "--set", "eval.ensemble=false", "--set", "train.threads=1"]
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), "--quiet", "--log", "mlflow", "--log", "wandb", *tiny]) == 0
    client, run = _mlflow_run(f"sqlite:///{out / 'mlflow.db'}")
    for stage in ("stage-1", "stage-2"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, f"{stage}/loss")] == [1, 2]
    assert run.data.params["mcl.stages"] == "2"
    (log,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert b"stage-2/loss" in _written(Path(log), b"stage-2/loss")
