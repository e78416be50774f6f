"""Run directories written by the previous code still load, evaluate and resume, with identical results.

The fixtures (tests/fixtures/runs-v1, see its README) were trained and evaluated by mcl before the
architecture change. Their configs name the absolute data path they were made at, so each test
copies its run back to that path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mcl
from mcl.io import load_tensors
from mcl.run import RunDirectory

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v1"
ORIGIN = Path("/tmp/mcl-fixture")


@pytest.fixture
def fixture_runs():
    """The fixture runs at the absolute path they were made at (skipped where /tmp is not writable)."""
    try:
        if ORIGIN.exists():
            shutil.rmtree(ORIGIN)
        shutil.copytree(FIXTURES, ORIGIN)
    except OSError as exc:
        pytest.skip(f"cannot recreate {ORIGIN}: {exc}")
    yield ORIGIN
    shutil.rmtree(ORIGIN, ignore_errors=True)


def _rows(result: dict) -> dict:
    return {(r["representation"], r["attribute"], r["probe"]): r["accuracy"] for r in result["rows"]}


@pytest.mark.parametrize("name", ["unimodal", "multimodal"])
def test_old_run_evaluates_to_the_same_rows(fixture_runs: Path, name: str) -> None:
    torch.set_num_threads(1)
    expected = json.loads((fixture_runs / f"expected-eval-{name}.json").read_text())
    result = mcl.evaluate(fixture_runs / name, progress=False)
    rows = _rows(result)
    # Every old row, with the same value; the only rows added since are the new clip-blind probe.
    assert {key: rows[key] for key in _rows(expected)} == _rows(expected)
    assert {key[2] for key in set(rows) - set(_rows(expected))} <= {"clip-blind"}
    assert result.get("kind", "images") == expected.get("kind", "images")


def test_old_run_loads(fixture_runs: Path) -> None:
    encoder = mcl.load(fixture_runs / "unimodal")
    assert encoder.num_stages == 2
    two_tower = mcl.load(fixture_runs / "multimodal")
    assert two_tower.num_stages == 2 and two_tower.stage0 is not None
    run = RunDirectory(fixture_runs / "multimodal")
    names = [r.name for r in run.representations(run.config())]
    assert names == ["stage-0", "stage-1", "stage-2", "mcl-2", "ensemble-2"]


@pytest.mark.slow
def test_old_interrupted_run_resumes_to_the_old_code_result(fixture_runs: Path) -> None:
    """The old code killed this run in stage 2; the new code finishes it bit for bit like the old code did."""
    run = fixture_runs / "interrupted"
    mcl.train(run / "config.yaml", out=run, progress=False)
    reference = fixture_runs / "unimodal"
    for member in ("stage-1", "stage-2", "ensemble-2"):
        new, old = load_tensors(run / member / "encoder.safetensors"), load_tensors(reference / member /
                                                                                    "encoder.safetensors")
        assert new.keys() == old.keys()
        assert all(torch.equal(new[k], old[k]) for k in new), member
    for file in ("stage-2/pseudo_labels.safetensors", "stage-2/clusters.safetensors"):
        new, old = load_tensors(run / file), load_tensors(reference / file)
        assert all(torch.equal(new[k], old[k]) for k in new), file
