"""Data people bring: a photo folder with class folders and no split; image+caption shards with no json."""

from __future__ import annotations

import json

import numpy as np

from data.test_split import photo_folder
from mcl.cli import main

TINY = ["--quiet", "--set", "data.image_size=12", "--set", "model.width=0.25", "--set", "model.hidden_dim=32",
        "--set", "model.projection_dim=16", "--set", "train.epochs=1", "--set", "train.batch_size=16",
        "--set", "train.threads=1", "--set", "mcl.stages=2", "--set", "mcl.clusters=2",
        "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
        "--set", "eval.references=false", "--set", "eval.linear_max_iter=30", "--set", "data.test_fraction=0.25"]


def test_a_photo_folder_without_a_split_trains_evaluates_and_embeds(tmp_path, capsys) -> None:
    photos = photo_folder(tmp_path / "photos", per_class=24)
    run = tmp_path / "run"
    assert main(["train", "configs/demo.yaml", "--data", str(photos), "--out", str(run), *TINY]) == 0
    assert main(["eval", str(run), "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    held = result["test_rows"]
    assert 1 <= held < 48 and result["train_rows"] + held == 48
    assert {row["attribute"] for row in result["rows"]} == {"class"}
    assert {row["representation"] for row in result["rows"]} >= {"stage-1", "stage-2", "mcl-2"}
    assert [d["stage"] for d in result["diagnostics"]] == [1, 2]
    features = tmp_path / "x.npy"
    assert main(["embed", str(run), "--data", str(photos), "--out", str(features), "--quiet"]) == 0
    assert np.load(features).shape[0] == 48
    assert main(["embed", str(run), "--data", str(photos), "--out", str(features), "--split", "test", "--quiet"]) == 0
    assert np.load(features).shape[0] == held
