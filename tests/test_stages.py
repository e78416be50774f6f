"""The multistage loop's guards: no silent collapse to one pseudo-label group, K guidance, growing a run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import mcl
from mcl.errors import ConfigError
from mcl.files import load_arrays, read_json

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
    second = read_json(tmp_path / "run" / "stage-2" / "diagnostics.json")
    assert second["novelty"] is not None and second["view_novelty"] is not None
    assert read_json(tmp_path / "run" / "stage-1" / "diagnostics.json")["view_novelty"] is None
    views = load_arrays(tmp_path / "run" / "stage-1" / "views.safetensors")  # 96 rows: the odd 48 of them
    width = np.load(tmp_path / "run" / "stage-1" / "embeddings.npy").shape[1]
    assert views["a"].shape == views["b"].shape == (48, width) and not np.allclose(views["a"], views["b"])
    result = mcl.evaluate(tmp_path / "run", progress=False)
    assert [row["stage"] for row in result["diagnostics"]] == [1, 2]
    assert result["diagnostics"][0]["groups_trained"] == 1 and result["diagnostics"][1]["groups_trained"] >= 2
    assert "stage-2" in format_diagnostics(result["diagnostics"])


def _digests(run: Path, stages: list[int]) -> dict[str, str]:
    import hashlib

    return {str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
            for stage in stages for path in sorted((run / f"stage-{stage}").iterdir())}


def test_a_finished_run_grows_a_stage_and_fewer_stages_score_the_first_k(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    mcl.train(_config(data, stages=2), out=run, progress=False)
    before = _digests(run, [1, 2])
    grown = mcl.train(_config(data, stages=3), out=run, progress=False)
    assert len(grown.history.models) == 3 and (run / "stage-3" / "encoder.safetensors").exists()
    assert _digests(run, [1, 2]) == before  # stages 1-2 untouched, byte for byte
    mcl.train(_config(data, stages=1), out=run, progress=False)
    names = {row["representation"] for row in mcl.evaluate(run, progress=False)["rows"]}
    assert names == {"stage-1"}
    assert _digests(run, [1, 2]) == before and (run / "stage-3" / "encoder.safetensors").exists()


def test_mcl_eval_set_changes_eval_keys_only(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mcl.cli import main

    run = tmp_path / "run"
    mcl.train(_config(data, stages=1), out=run, progress=False)
    assert main(["eval", str(run), "--quiet", "--set", "eval.knn_k=3", "--set", "eval.linear_max_iter=5"]) == 0
    assert read_json(run / "eval.json")["eval_overrides"] == ["eval.knn_k=3", "eval.linear_max_iter=5"]
    assert main(["eval", str(run), "--quiet", "--set", "train.epochs=3"]) == 2
    assert "only eval.*, " in capsys.readouterr().err
    assert main(["eval", str(run), "--quiet", "--set", "multimodal.integrate_stage0=true"]) == 2  # allowed key,
    assert "needs multimodal.stage0" in capsys.readouterr().err  # but validated like any config
    assert main(["eval", str(run), "--quiet", "--set", "eval.knn_k=0"]) == 2


@pytest.mark.parametrize(("threshold", "trained"), [(2.0, 2), (-1.0, 3)])
def test_auto_stages_decide_from_the_diagnostics_and_record_why(data: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, threshold: float,
                                                                trained: int) -> None:
    from mcl import diagnostics, stages

    monkeypatch.setattr(stages, "continue_training",
                        lambda records: diagnostics.continue_training(records, "novelty", threshold))
    run = mcl.train(_config(data, stages="auto", max_stages=3), out=tmp_path / "run", progress=False)
    assert len(run.history.models) == trained and run.config.mcl.stages == trained
    assert mcl.api.read_run_config(tmp_path / "run").mcl.stages == trained
    decision = read_json(tmp_path / "run" / "stages_auto.json")
    assert decision["continue"] is (trained == 3) and "novelty" in decision["reason"]
    assert {row["representation"] for row in mcl.evaluate(tmp_path / "run", progress=False)["rows"]} >= {
        f"mcl-{trained}"}


def test_continue_training_rule() -> None:
    from mcl.diagnostics import continue_training

    assert continue_training([{"stage": 1}])[0]
    assert not continue_training([{"stage": 1}, {"stage": 2, "novelty": 0.1}], "novelty", 0.2)[0]
    go_on, reason = continue_training([{"stage": 1}, {"stage": 2, "novelty": 0.3}], "novelty", 0.2)
    assert go_on and "0.300 >= 0.2" in reason


def test_latest_stage_groups_are_the_last_stage_clusters(data: Path, tmp_path: Path) -> None:
    from mcl.files import load_arrays
    from mcl.pseudolabels import pseudo_labels_from_stages

    run = tmp_path / "run"
    mcl.train(_config(data, stages=3, group_stages="latest", min_group_size=2), out=run, progress=False)
    clusters = load_arrays(run / "stage-2" / "clusters.safetensors")
    labels = load_arrays(run / "stage-3" / "pseudo_labels.safetensors")["pseudo_labels"]
    expected, _ = pseudo_labels_from_stages([clusters["labels"]], [clusters["centroids"]], min_group_size=2)
    assert np.array_equal(labels, expected)  # stage 3 groups by stage 2's clusters alone, not stage 1's too


def test_recorded_views_none_for_a_stage_without_them_and_an_error_for_a_wrong_file(tmp_path: Path) -> None:
    from mcl.config import config_from_dict
    from mcl.errors import RunDirError
    from mcl.files import save_arrays
    from mcl.run import VIEWS_FILE, RunDirectory
    from mcl.stages import recorded_views

    run = RunDirectory(tmp_path / "run")
    run.start(config_from_dict({"train": {"device": "cpu"}}), {"train_rows": 8})
    views = {"a": np.zeros((4, 3), np.float32), "b": np.ones((4, 3), np.float32)}
    for stage, arrays in ((1, views), (2, {"a": views["a"]})):
        path = run.stage_dir(stage) / VIEWS_FILE
        path.parent.mkdir(parents=True)
        save_arrays(path, arrays)
        run.record(path)
    assert recorded_views(run, [1, 3], 4, [3, 3]) is None  # stage 3 has none (an earlier mcl's stage)
    assert [a.shape for a in recorded_views(run, [1], 4, [3])[0]] == [(4, 3), (4, 3)]
    with pytest.raises(RunDirError, match=r"stage-2/views.safetensors: expected arrays 'a' and 'b' of shape \(4, 3\)"):
        recorded_views(run, [1, 2], 4, [3, 3])
    with pytest.raises(RunDirError, match=r"of shape \(4, 5\)"):
        recorded_views(run, [1], 4, [5])
