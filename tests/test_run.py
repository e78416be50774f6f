"""The run directory's manifest: fingerprints, checksums, format versions, resume checks."""

import json

import pytest

from mcl.config import config_from_dict
from mcl.errors import RunDirError
from mcl.files import write_bytes
from mcl.run import RunDirectory, config_fingerprint

DATA = {"train_rows": 10, "labels_sha256": "abc"}


@pytest.fixture
def run(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.start(config_from_dict({}), DATA)
    return run


def test_start_then_resume_with_the_same_config(run):
    assert run.exists()
    assert run.start(config_from_dict({"train": {"threads": 3}}), DATA)["files"] == {}  # threads: not a change


def test_changed_config_names_the_key(run):
    with pytest.raises(RunDirError, match=r"config changed .*train\.lr \(0\.002 -> 0\.1\)"):
        run.start(config_from_dict({"train": {"lr": 0.1}}), DATA)


def test_changed_data_is_refused(run):
    with pytest.raises(RunDirError, match="data set differs"):
        run.start(config_from_dict({}), {**DATA, "train_rows": 11})


def test_other_format_version_is_refused(run):
    manifest = json.loads(run.manifest_path.read_text())
    manifest["format_version"] = 99
    run.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="format version 99, this mcl reads version 1"):
        run.start(config_from_dict({}), DATA)


def test_corrupt_manifest_is_a_run_dir_error(run):
    run.manifest_path.write_text('{"format_version": 1, "fi')
    with pytest.raises(RunDirError, match="not valid JSON"):
        run.read_manifest()


def test_recorded_file_is_finished_until_modified(run):
    path = run.stage_dir(1) / "encoder.safetensors"
    assert not run.is_finished(path)
    write_bytes(path, b"weights" * 100)
    run.record(path)
    assert run.is_finished(path)
    path.write_bytes(b"weights" * 50)  # truncated
    with pytest.raises(RunDirError, match="checksum differs"):
        run.is_finished(path)
    with pytest.raises(RunDirError, match="encoder.safetensors: checksum differs"):
        run.start(config_from_dict({}), DATA)  # resume verifies every recorded file up front
    path.unlink()
    with pytest.raises(RunDirError, match="recorded as finished in manifest.json but missing"):
        run.verify()


def test_an_unchanged_file_is_hashed_once_per_process(run, monkeypatch):
    import mcl.run

    path = run.stage_dir(1) / "encoder.safetensors"
    write_bytes(path, b"weights" * 100)
    run.record(path)
    calls = []
    real = mcl.run.sha256_file
    monkeypatch.setattr(mcl.run, "sha256_file", lambda p: calls.append(p) or real(p))
    assert run.is_finished(path) and run.is_finished(path) and run.is_finished(path)
    assert calls == [], "hashed when recorded, then remembered by (inode, size, mtime)"
    monkeypatch.setattr(mcl.run, "_VERIFIED", set())  # a new process: the recorded file is hashed once
    assert run.is_finished(path) and run.is_finished(path)
    assert len(calls) == 1, "verified once, then remembered"
    write_bytes(path, b"weightz" * 100)  # same size, new file (atomic write: new inode and mtime)
    with pytest.raises(RunDirError, match="checksum differs"):
        run.is_finished(path)


def test_resume_removes_temporaries_of_interrupted_writes(run):
    stale = run.stage_dir(1) / ".checkpoint.safetensors.abc123.tmp"
    baseline = run.member_dir("finetune-1") / ".weights.safetensors.def456.tmp"  # baseline members too
    write_bytes(stale, b"half a checkpoint")
    write_bytes(baseline, b"half a baseline")
    run.start(config_from_dict({}), DATA)
    assert not stale.exists() and not baseline.exists()


def test_require_existing(tmp_path, run):
    run.require_existing()
    with pytest.raises(RunDirError, match="no run to resume"):
        RunDirectory(tmp_path / "empty").require_existing()


def test_fingerprint_ignores_threads_device_and_eval():
    base = config_fingerprint(config_from_dict({}))
    same = config_from_dict({"train": {"threads": 1, "device": "cpu"}, "eval": {"knn_k": 5}})
    assert config_fingerprint(same) == base
    assert config_fingerprint(config_from_dict({"seed": 1})) != base


def test_key_added_to_mcl_since_the_run_started(run):
    """An upgrade that adds a config key must not strand a run, unless the key is set to a non-default."""
    manifest = json.loads(run.manifest_path.read_text())
    del manifest["config"]["augment"]  # as if the whole section and ...
    del manifest["config"]["train"]["lr"]  # ... this key were added after the run started
    run.manifest_path.write_text(json.dumps(manifest))
    run.start(config_from_dict({}), DATA)
    with pytest.raises(RunDirError, match=r"augment\.flip \(0\.5 -> 0\.0\)"):
        run.start(config_from_dict({"augment": {"flip": 0.0}}), DATA)


def test_fingerprint_ignores_which_members_mcl_k_integrates():
    base = config_fingerprint(config_from_dict({"multimodal": {"stage0": True}}))
    integrated = config_from_dict({"multimodal": {"stage0": True, "integrate_stage0": True}})
    assert config_fingerprint(integrated) == base  # evaluation only: the same trained members


def test_finetune_concat_k_is_mcl_k_baseline_when_stage0_is_integrated(run, monkeypatch):
    finished = {"stage-0", "stage-1", "stage-2", "finetune-1", "finetune-2"}
    monkeypatch.setattr(RunDirectory, "is_finished", lambda self, path: path.parent.name in finished)
    config = config_from_dict({"mcl": {"stages": 2}})
    names = {r.name: r.members for r in run.representations(config, include_stage0=True)}
    assert names["mcl-2"] == ("stage-0", "stage-1", "stage-2")
    assert names["finetune-concat-1"] == ("stage-0", "finetune-1")
    assert names["finetune-concat-2"] == ("stage-0", "finetune-1", "finetune-2")
    assert not any(n.startswith("finetune-concat") for n in (r.name for r in run.representations(config)))
