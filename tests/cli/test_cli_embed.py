"""``mcl embed`` documents and prints its row order; ``--paths`` lists the rows' images in that order."""

import json

import numpy as np
import pytest

from mcl.cli import main

TINY = [
    "--quiet", "--set", "data.n_train=48", "--set", "data.n_test=16", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "mcl.stages=1", "--set", "mcl.clusters=2",
    "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
]


def test_help_states_the_row_order(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "rows of labels.csv in file order" in help_text and "all splits unless --split" in help_text
    assert "skipped" in help_text


@pytest.mark.slow
def test_rows_follow_labels_csv(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "configs/demo.yaml", "--out", str(run), *TINY]) == 0
    data = run / "data"
    features, paths = tmp_path / "x.npy", tmp_path / "paths.txt"
    assert main(["embed", str(run), "--data", str(data), "--out", str(features), "--paths", str(paths),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "all splits unless --split" in out and "(0 skipped here)" in out
    listed = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    assert paths.read_text().splitlines() == listed
    assert np.load(features).shape[0] == len(listed) == 64
    assert json.loads((run / "manifest.json").read_text())["files"]
