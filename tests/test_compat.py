"""Run directories written by the previous code still load, evaluate and resume, with identical results.

The fixtures (tests/fixtures/runs-v1, see its README) were trained and evaluated by mcl before the
architecture change. Their configs name the absolute data path they were made at, so each test
copies its run back to that path (under a file lock: parallel test processes share that path).

Training bits depend on the CPU's kernels (an AMD and an Intel AVX-512 machine give different last
bits from the same code), so the resume test compares bitwise with the *stored* old results only on the
kind of CPU that made them (``origin.json``); everywhere it checks that the old interrupted run, resumed
by this code, ends bit for bit where the old *uninterrupted* run ends when this code finishes it from
the same recorded state (its stage 1 and clusters), and that what was recorded stays untouched.
"""

from __future__ import annotations

import fcntl
import json
import platform
import shutil
from pathlib import Path

import pytest
import torch

import mcl
from mcl.files import load_tensors
from mcl.run import RunDirectory

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v1"
ORIGIN = Path("/tmp/mcl-fixture")


@pytest.fixture
def fixture_runs():
    """The fixture runs at the absolute path they were made at (skipped where /tmp is not writable)."""
    try:
        lock = open(ORIGIN.with_suffix(".lock"), "w")  # noqa: SIM115 - held for the whole test
    except OSError as exc:
        pytest.skip(f"cannot lock {ORIGIN}: {exc}")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if ORIGIN.exists():
                shutil.rmtree(ORIGIN)
            shutil.copytree(FIXTURES, ORIGIN)
        except OSError as exc:
            pytest.skip(f"cannot recreate {ORIGIN}: {exc}")
        yield ORIGIN
        shutil.rmtree(ORIGIN, ignore_errors=True)


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _same_machine_kind_as_fixtures() -> bool:
    origin = json.loads((FIXTURES / "origin.json").read_text())
    return _cpu_vendor() == origin["cpu_vendor"] and torch.__version__ == origin["torch"]


def _assert_same_tensors(new_file: Path, old_file: Path, what: str) -> None:
    new, old = load_tensors(new_file), load_tensors(old_file)
    assert new.keys() == old.keys(), what
    assert all(torch.equal(new[k], old[k]) for k in new), what


def _rows(result: dict) -> dict:
    return {(r["representation"], r["attribute"], r["probe"]): r["accuracy"] for r in result["rows"]}


@pytest.mark.parametrize("name", ["unimodal", "multimodal"])
def test_old_run_evaluates_to_the_same_rows(fixture_runs: Path, name: str) -> None:
    torch.set_num_threads(1)
    expected = json.loads((fixture_runs / f"expected-eval-{name}.json").read_text())
    result = mcl.evaluate(fixture_runs / name, progress=False)
    rows = _rows(result)
    # Every old row, with the same value; the only rows added since are the new clip-blind probe and R@10.
    assert {key: rows[key] for key in _rows(expected)} == _rows(expected)
    assert {key[2] for key in set(rows) - set(_rows(expected))} <= {"clip-blind", "retrieval-i2t@10",
                                                                    "retrieval-t2i@10"}
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
    """The old code killed this run in stage 2; the new code finishes it bit for bit like the uninterrupted run."""
    run = fixture_runs / "interrupted"
    recorded = {f: (run / f).read_bytes() for f in ("stage-1/encoder.safetensors", "stage-2/pseudo_labels.safetensors")}
    mcl.train(run / "config.yaml", out=run, progress=False)
    assert {f: (run / f).read_bytes() for f in recorded} == recorded, "recorded results are loaded, never redone"
    reference = fixture_runs / "unimodal"
    if not _same_machine_kind_as_fixtures():
        # Finish the old uninterrupted run's recorded state (stage 1, its clusters, stage 2's pseudo-labels) with
        # this code on this CPU: the resumed run must end exactly there.
        for member in ("stage-2/encoder.safetensors", "stage-2/clusters.safetensors", "stage-2/clusters.json",
                       "stage-2/metrics.jsonl", "ensemble-2"):
            path = reference / member
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        manifest = json.loads((reference / "manifest.json").read_text())
        manifest["files"] = {k: v for k, v in manifest["files"].items()
                             if not k.startswith(("stage-2/encoder", "stage-2/clusters", "ensemble-2"))}
        (reference / "manifest.json").write_text(json.dumps(manifest))
        mcl.train(reference / "config.yaml", out=reference, progress=False)
    for member in ("stage-1", "stage-2", "ensemble-2"):
        _assert_same_tensors(run / member / "encoder.safetensors", reference / member / "encoder.safetensors", member)
    for file in ("stage-2/pseudo_labels.safetensors", "stage-2/clusters.safetensors"):
        _assert_same_tensors(run / file, reference / file, file)
