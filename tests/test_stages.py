"""The multistage loop's guards: no silent collapse to one pseudo-label group, K guidance, growing a run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import mcl
from mcl.errors import ConfigError
from mcl.files import read_json

TINY = {
    "data": {"image_size": 12},
    "model": {"backbone": "convnet", "width": 0.25, "hidden_dim": 32, "projection_dim": 16},
    "train": {"epochs": 1, "batch_size": 32, "threads": 1},
    "mcl": {"stages": 2, "clusters": 3, "min_group_size": 4, "kmeans_restarts": 1},
    "eval": {"ensemble": False, "references": False, "linear_max_iter": 30},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mcl.data.trifeature import generate_trifeature

    return generate_trifeature(tmp_path_factory.mktemp("data"), n_train=96, n_test=32, image_size=12, seed=0)


def _config(data: Path, **mcl_keys: object) -> dict:
    return {**TINY, "data": {"source": "table", "path": str(data), "image_size": 12},
            "mcl": {**TINY["mcl"], **mcl_keys}}


def test_a_stage_collapsing_to_one_group_is_an_error_naming_the_numbers_and_keys(data: Path, tmp_path: Path) -> None:
    # 96 samples in 3 clusters of ~32, every group below min_group_size=90: the merge leaves one group.
    with pytest.raises(ConfigError) as error:
        mcl.train(_config(data, min_group_size=90), out=tmp_path / "run", progress=False)
    message = str(error.value)
    assert "stage-2" in message and "leave 1 group" in message and "before merging" in message
    assert "96 training samples" in message
    assert "lower mcl.min_group_size (90) to at most" in message and "mcl.allow_single_group" in message
    assert "\n" not in message
    assert not (tmp_path / "run" / "stage-2" / "encoder.safetensors").exists()


def test_allow_single_group_trains_on_and_says_so(data: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mcl"):
        run = mcl.train(_config(data, min_group_size=90, allow_single_group=True), out=tmp_path / "run",
                        progress=False)
    assert len(run.history.models) == 2
    assert any("allowed by mcl.allow_single_group" in record.getMessage() for record in caplog.records)
    info = read_json(tmp_path / "run" / "stage-2" / "pseudo_labels.json")
    assert info["groups"] == 1 and info["groups_trained"] == 1


def test_the_collapse_error_can_be_fixed_in_the_same_run_directory(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        mcl.train(_config(data, min_group_size=90), out=tmp_path / "run", progress=False)
    run = mcl.train(_config(data, min_group_size=90, allow_single_group=True), out=tmp_path / "run",
                    progress=False)
    assert len(run.history.models) == 2


def test_k_too_large_for_n_and_the_batch_is_a_warning_saying_what_works(data: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = _config(data, stages=1, clusters=8)
    with caplog.at_level(logging.WARNING, logger="mcl"):
        mcl.train({**config, "mcl": {**config["mcl"], "stages": 2}}, out=tmp_path / "run", progress=False)
    text = " ".join(record.getMessage() for record in caplog.records)
    assert "mcl.clusters=8 on 96 training samples" in text and "smaller than train.batch_size=32" in text
    assert "mcl.clusters <= 3" in text


def test_every_stage_records_its_diagnostics_and_eval_carries_them(data: Path, tmp_path: Path) -> None:
    from mcl.evaluation.stage_diagnostics import format_diagnostics

    mcl.train(_config(data), out=tmp_path / "run", progress=False)
    for stage in (1, 2):
        recorded = read_json(tmp_path / "run" / f"stage-{stage}" / "diagnostics.json")
        assert recorded["stage"] == stage and recorded["groups_trained"] >= 1 and recorded["rankme"] > 1
    assert read_json(tmp_path / "run" / "stage-2" / "diagnostics.json")["novelty"] is not None
    result = mcl.evaluate(tmp_path / "run", progress=False)
    assert [row["stage"] for row in result["diagnostics"]] == [1, 2]
    assert result["diagnostics"][0]["groups_trained"] == 1 and result["diagnostics"][1]["groups_trained"] >= 2
    assert "stage-2" in format_diagnostics(result["diagnostics"])
