"""``mcl eval``'s representations are the ones ``mcl.load`` gives users, in both integration modes."""

import numpy as np
import pytest

import mcl
from mcl.api import load_member, load_table_for, read_run_config
from mcl.cli import main
from mcl.evaluation.runner import representations
from mcl.run import RunDirectory

TINY = [
    "--quiet", "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "mcl.stages=2", "--set", "mcl.clusters=3",
    "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["normalized-concat", "concat-then-normalize"])
def test_mcl_rows_are_the_loaded_encoders_features(tmp_path, mode):
    assert main(["train", "configs/demo.yaml", "--out", str(tmp_path), *TINY, "--set", f"mcl.integration={mode}"]) == 0
    config = read_run_config(tmp_path)
    config.data.path = str(tmp_path / "data")
    table = load_table_for(config, progress=False)
    test_images = table.subset("test").images
    features = representations(RunDirectory(tmp_path), config, table.subset("train").images, test_images,
                               lambda member: load_member(tmp_path, member, config))
    encoder = mcl.load(tmp_path)
    assert np.allclose(features["mcl-2"][1].numpy(), encoder.embed(test_images), atol=1e-6)
    assert np.allclose(features["stage-2"][1].numpy(), encoder.embed(test_images, stages=[2]), atol=1e-6)
