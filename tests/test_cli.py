"""End to end: ``mcl train`` + ``mcl eval`` + ``mcl embed`` on a tiny generated set."""

import json

import numpy as np
import pytest

from mcl.cli import main

TINY = [
    "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "mcl.stages=2",
    "--set", "mcl.clusters=3", "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1",
    "--set", "eval.linear_max_iter=50",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "configs/demo.yaml", "--out", str(out), "--quiet", *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_writes_the_run_directory(trained_run):
    for stage in (1, 2):
        stage_dir = trained_run / f"stage-{stage}"
        assert (stage_dir / "encoder.safetensors").exists()
        assert (stage_dir / "clusters.safetensors").exists()
        metrics = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
        assert metrics and {"loss", "lr", "images_per_s"} <= set(metrics[0])
        assert not (stage_dir / "checkpoint.safetensors").exists()
    assert (trained_run / "stage-2" / "pseudo_labels.safetensors").exists()
    assert (trained_run / "ensemble-2" / "encoder.safetensors").exists()
    assert (trained_run / "config.yaml").exists() and (trained_run / "manifest.json").exists()


@pytest.mark.slow
def test_eval_writes_rows_for_every_representation(trained_run, capsys):
    assert main(["eval", str(trained_run), "--quiet"]) == 0
    result = json.loads((trained_run / "eval.json").read_text())
    names = {row["representation"] for row in result["rows"]}
    assert names == {"stage-1", "stage-2", "mcl-2", "ensemble-2", "random-init", "pixels"}
    assert {row["attribute"] for row in result["rows"]} == {"shape", "texture", "color"}
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in result["rows"])
    assert "mcl-2" in capsys.readouterr().out


@pytest.mark.slow
def test_rerun_recomputes_nothing(trained_run):
    before = (trained_run / "stage-2" / "encoder.safetensors").stat().st_mtime_ns
    assert main(["train", "configs/demo.yaml", "--out", str(trained_run), "--quiet", *TINY]) == 0
    assert (trained_run / "stage-2" / "encoder.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_embed_and_python_api(trained_run, tmp_path):
    import mcl

    out = tmp_path / "features.npy"
    assert main(["embed", str(trained_run), "--data", str(trained_run / "data"), "--out", str(out), "--quiet"]) == 0
    features = np.load(out)
    encoder = mcl.load(trained_run)
    assert features.shape == (144, 2 * encoder.stages[0].feature_dim)
    first = encoder.embed(np.zeros((2, 16, 16, 3), np.uint8), stages=1)
    assert first.shape == (2, encoder.stages[0].feature_dim)


def test_bad_config_key_exits_2(tmp_path, capsys):
    assert main(["train", "configs/demo.yaml", "--out", str(tmp_path), "--set", "train.epoch=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'train.epochs'" in err


def test_changed_config_on_existing_run_is_refused(trained_run, capsys):
    assert main(["train", "configs/demo.yaml", "--out", str(trained_run), "--quiet", *TINY,
                 "--set", "objective.temperature=0.2"]) == 2
    assert "config changed" in capsys.readouterr().err
