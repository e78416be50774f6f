"""The Python API: train/load/evaluate, warnings a new user needs, an injectable training loop."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import mcl
from mcl.data.table import write_table
from mcl.errors import RunDirError
from mcl.training import train as default_fit

TINY = {
    "model": {"backbone": "convnet", "width": 0.25, "projection_dim": 8, "hidden_dim": 16},
    "train": {"epochs": 1, "batch_size": 16, "threads": 1},
    "mcl": {"stages": 2, "clusters": 2, "min_group_size": 4, "kmeans_restarts": 1},
    "eval": {"ensemble": False},
}


def _table(root: Path, splits: list[str]) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(splits), 12, 12, 3), dtype=np.uint8)
    colours = [["red", "blue"][i] for i in rng.integers(0, 2, len(splits))]
    return write_table(root, images, {"colour": colours}, split=splits, progress=False)


def _config(data: Path) -> dict:
    return {**TINY, "data": {"source": "table", "path": str(data), "image_size": 12}}


def test_training_without_a_test_split_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcl")
    data = _table(tmp_path / "t", ["train"] * 32)
    config = _config(data)
    mcl.train({**config, "data": {**config["data"], "test_fraction": 0}}, out=tmp_path / "run", progress=False)
    assert "no rows with split=test" in caplog.text and "mcl eval" in caplog.text


def test_training_without_a_test_split_holds_one_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcl")
    data = _table(tmp_path / "t", ["train"] * 40)
    mcl.train(_config(data), out=tmp_path / "run", progress=False)
    assert "held out" in caplog.text and "no rows with split=test" not in caplog.text
    result = mcl.evaluate(tmp_path / "run", progress=False)
    assert result["test_rows"] >= 1 and result["train_rows"] + result["test_rows"] == 40


def test_a_custom_fit_trains_the_stages(tmp_path: Path) -> None:
    calls = []

    def fit(model, loss_fn, loader, config, stage_dir, pseudo_labels=None, stage_name="stage", progress=True,
            extra_state=None):
        calls.append((stage_name, pseudo_labels is not None, len(loader)))
        default_fit(model, loss_fn, loader, config, stage_dir, pseudo_labels, stage_name, progress, extra_state)

    data = _table(tmp_path / "t", ["train"] * 32 + ["test"] * 8)
    run = mcl.train(_config(data), out=tmp_path / "run", progress=False, fit=fit)
    assert [c[:2] for c in calls] == [("stage-1", False), ("stage-2", True)]
    assert run.encoder.num_stages == 2


def test_evaluating_an_unfinished_run_names_the_stages(tmp_path: Path) -> None:
    data = _table(tmp_path / "t", ["train"] * 32 + ["test"] * 8)
    mcl.train({**_config(data), "mcl": {**TINY["mcl"], "stages": 1}}, out=tmp_path / "run", progress=False)
    config_file = tmp_path / "run" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("stages: 1", "stages: 3"))
    with pytest.raises(RunDirError, match=r"stage-2, stage-3 not done"):
        mcl.evaluate(tmp_path / "run", progress=False)
    partial = mcl.evaluate(tmp_path / "run", progress=False, allow_unfinished=True)
    assert partial["unfinished_stages"] == [2, 3]
    assert {r["representation"] for r in partial["rows"]} >= {"stage-1", "random-init"}


def test_finetune_baseline_takes_the_steps_of_the_stages(tmp_path: Path) -> None:
    from mcl.files import read_jsonl
    from mcl.stages import stage_steps

    data = _table(tmp_path / "t", ["train"] * 40 + ["test"] * 8)
    config = {**_config(data), "eval": {"ensemble": False, "finetune_baseline": True, "linear_max_iter": 50}}
    mcl.train(config, out=tmp_path / "run", progress=False)
    run_dir = tmp_path / "run"
    for k in (1, 2):
        steps = sum(r["steps"] for r in read_jsonl(run_dir / f"finetune-{k}" / "metrics.jsonl"))
        assert steps == stage_steps(mcl.run.RunDirectory(run_dir), k) > 0
    names = {r["representation"] for r in mcl.evaluate(run_dir, progress=False)["rows"]}
    assert {"finetune-1", "finetune-2", "mcl-2"} <= names
