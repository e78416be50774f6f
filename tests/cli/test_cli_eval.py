"""``mcl eval`` on an unfinished run: a one-line error naming the missing stages; ``--partial`` scores the rest."""

import json

import pytest

from mcl.cli import main

TINY = [
    "--quiet", "--set", "data.n_train=64", "--set", "data.n_test=32", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "mcl.stages=2", "--set", "mcl.clusters=2",
    "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
    "--set", "eval.linear_max_iter=50",
]


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory):
    """A finished 2-stage run whose stage 2 is then dropped from the manifest (as if killed while training it)."""
    out = tmp_path_factory.mktemp("unfinished")
    assert main(["train", "configs/demo.yaml", "--out", str(out), *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]["stage-2/encoder.safetensors"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.slow
def test_unfinished_run_is_refused(unfinished_run, capsys):
    assert main(["eval", str(unfinished_run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mcl: error: ")
    assert "stage-2" in err and "--partial" in err
    assert not (unfinished_run / "eval.json").exists()


@pytest.mark.slow
def test_partial_scores_the_finished_stages_and_says_so(unfinished_run, capsys):
    assert main(["eval", str(unfinished_run), "--partial", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "partial evaluation: stage-2 not trained yet" in out and "linear probe" in out
    result = json.loads((unfinished_run / "eval.json").read_text())
    assert result["unfinished_stages"] == [2]
    assert {row["representation"] for row in result["rows"]} == {"stage-1", "random-init", "pixels"}


@pytest.mark.slow
def test_eval_prints_each_row_once(tmp_path, capsys):
    """The rows' values reach the terminal once, in the tables; the log says only which representation is done."""
    out = tmp_path / "run"
    assert main(["train", "configs/demo.yaml", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # not --quiet: the progress lines are on
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    result = json.loads((out / "eval.json").read_text())
    tables = captured.out.split("Stage diagnostics")[0].splitlines()  # the stage table names stages too
    for name in {row["representation"] for row in result["rows"]}:
        with_values = [line for line in lines if name in line.split() and any(c.isdigit() for c in line)
                       and "Stage diagnostics" not in line]
        in_tables = [line for line in tables if line.split()[:1] == [name]]
        assert len(in_tables) == 2, in_tables  # one line in the linear table, one in the kNN table
        diagnostics = [line for line in captured.out.split("Stage diagnostics")[1].splitlines()
                       if line.split()[:1] == [name]]
        assert sorted(with_values) == sorted(in_tables + diagnostics), with_values
    assert any(line.startswith("[mcl] stage-1: scored") for line in lines)  # progress is still there
