"""Bad input through ``mcl.cli.main``: a one-line error naming the file/row/key, exit code 2, no traceback."""

import errno
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from mcl.cli import main
from mcl.data import load_table, write_table
from mcl.files import save_arrays
from mcl.run import RunDirectory

CONFIG = "configs/demo.yaml"
TINY = [
    "--quiet", "--set", "data.image_size=16", "--set", "model.width=0.25", "--set", "model.hidden_dim=16",
    "--set", "model.projection_dim=8", "--set", "train.epochs=1", "--set", "train.batch_size=8",
    "--set", "mcl.stages=2", "--set", "mcl.clusters=2", "--set", "mcl.min_group_size=2",
    "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
]


def write_images(directory, n_train=16, n_test=8, size=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_train + n_test, size, size, 3), dtype=np.uint8)
    shape = [("round", "square")[i % 2] for i in range(n_train + n_test)]
    return write_table(directory, images, {"shape": shape}, ["train"] * n_train + ["test"] * n_test)


def error_line(capsys) -> str:
    """The error the CLI printed: its last stderr line, which must be the whole message."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mcl: error: "), err
    return last


def train(data, out, *extra):
    return main(["train", CONFIG, "--data", str(data), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("table"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, table):
    out = tmp_path_factory.mktemp("run")
    assert train(table, out) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


@pytest.mark.parametrize(("override", "expected"), [
    ("train.epoch=1", "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("train.epochs=two", "config key 'train.epochs': expected an integer, got 'two'"),
    ("train.lr=-1", "config key 'train.lr': expected a positive number, got -1.0"),
    ("mcl.clusters=50", "config key 'mcl.clusters': 50 clusters but only 16 training images"),
    ("train.batch_size=64", "config key 'train.batch_size': 64 is larger than the training set (16 images)"),
])
def test_config_errors(table, tmp_path, capsys, override, expected):
    assert train(table, tmp_path / "run", "--set", override) == 2
    assert expected in error_line(capsys)


def test_missing_data_dir(tmp_path, capsys):
    assert train(tmp_path / "nowhere", tmp_path / "run") == 2
    line = error_line(capsys)
    assert line.startswith(f"mcl: error: {tmp_path / 'nowhere'}: not found; expected a directory with labels.csv")


@pytest.mark.parametrize(("csv", "expected"), [
    ("path,split,shape\n", "labels.csv: no image rows"),
    ("file,split\na.png,train\n", "labels.csv line 1: no 'path' column (columns: file, split)"),
])
def test_broken_labels_csv(tmp_path, capsys, csv, expected):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text(csv)
    assert train(tmp_path / "data", tmp_path / "run") == 2
    assert expected in error_line(capsys)


def test_no_training_rows(tmp_path, capsys):
    data = write_images(tmp_path / "data", n_train=0, n_test=8)
    assert train(data, tmp_path / "run") == 2
    assert error_line(capsys).endswith("labels.csv: no rows with split=train to train on")


@pytest.mark.parametrize(("damage", "reason"), [("missing", "file not found"), ("corrupt", "UnidentifiedImageError")])
def test_bad_image_is_an_error_by_default(tmp_path, capsys, damage, reason):
    data = write_images(tmp_path / "data")
    image = data / "images" / "000002.png"
    image.unlink() if damage == "missing" else image.write_bytes(b"not a png")
    assert train(data, tmp_path / "run") == 2
    line = error_line(capsys)
    assert f"labels.csv line 4: column 'path': image 'images/000002.png' cannot be read ({reason}" in line
    assert "on_bad_image='skip'" in line


def test_skip_policy_and_mixed_sizes_and_modes(tmp_path, capsys):
    """Unreadable images are skipped (count and first paths logged); any size or mode is resized to RGB."""
    data = write_images(tmp_path / "data", n_train=20)
    (data / "images" / "000001.png").write_bytes(b"truncated")
    (data / "images" / "000003.png").unlink()
    Image.new("L", (40, 24), 128).save(data / "images" / "000004.png")  # grey, not square, larger
    Image.new("RGBA", (9, 9), (10, 20, 30, 0)).save(data / "images" / "000005.png")  # alpha, smaller
    Image.new("P", (16, 16)).save(data / "images" / "000006.png")  # palette
    assert train(data, tmp_path / "run", "--set", "data.on_bad_image=skip", "--set", "mcl.stages=1") == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s): 'images/000001.png', 'images/000003.png'" in err
    loaded = load_table(data, image_size=16, on_bad_image="skip", progress=False)
    assert loaded.images.shape == (26, 16, 16, 3) and loaded.images.dtype == np.uint8
    assert (loaded.images[loaded.paths.index("images/000004.png")] == 128).all()


def test_nan_loss_stops_with_a_clear_message(table, tmp_path, capsys):
    assert train(table, tmp_path / "run", "--set", "objective.temperature=1.0e-45") == 2
    line = error_line(capsys)
    assert "stage-1 epoch 1 step 1: loss is nan; stopped, the last good checkpoint is kept" in line


def test_full_disk_leaves_files_intact(run_copy, table, capsys, monkeypatch):
    config = run_copy / "config.yaml"
    before = config.read_bytes()
    real_fdopen = os.fdopen

    def full(fd, mode="r"):
        handle = real_fdopen(fd, mode)
        handle.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", full)
        assert train(table, run_copy) == 2
    line = error_line(capsys)
    assert line.startswith(f"mcl: error: {config}: No space left on device while writing")
    assert config.read_bytes() == before and not list(run_copy.glob(".*.tmp"))
    assert train(table, run_copy) == 0  # nothing was corrupted: the same command goes on


def test_full_disk_outside_atomic_writes_is_one_line_too(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path / "x"))

    monkeypatch.setattr("mcl.api.resolve_data", full)
    assert train(tmp_path, tmp_path / "run") == 2
    assert error_line(capsys).startswith(f"mcl: error: {tmp_path / 'x'}: Disk quota exceeded")


@pytest.mark.parametrize("command", ["train", "eval", "report"])
def test_run_dir_of_another_format_version(run_copy, table, capsys, command):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["format_version"] = 2
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    argv = {"train": ["train", CONFIG, "--data", str(table), "--out", str(run_copy), *TINY],
            "eval": ["eval", str(run_copy), "--quiet"], "report": ["report", str(run_copy)]}[command]
    assert main(argv) == 2
    assert "run directory format version 2, this mcl reads version 1" in error_line(capsys)


def test_resume_without_a_run(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "manifest.json: not found, so there is no run to resume" in error_line(capsys)


def test_train_without_config_or_resume(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "a CONFIG.yaml is required" in error_line(capsys)


def test_truncated_weights_are_detected(run_copy, table, capsys):
    weights = run_copy / "stage-1" / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert train(table, run_copy) == 2
    assert f"{weights}: checksum differs from manifest.json" in error_line(capsys)


def test_pseudo_labels_of_the_wrong_length(run_copy, table, capsys):
    path = run_copy / "stage-2" / "pseudo_labels.safetensors"
    save_arrays(path, {"pseudo_labels": np.zeros(15, dtype=np.int64)})
    RunDirectory(run_copy).record(path)  # consistent checksums, inconsistent content
    assert main(["train", "--resume", "--out", str(run_copy), "--quiet"]) == 2
    assert f"{path}: 15 pseudo-labels for a training set of 16 samples" in error_line(capsys)


def test_tensorboard_not_installed(table, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert train(table, tmp_path / "run", "--log", "tensorboard") == 2
    assert "--log tensorboard: the 'tensorboard' package is not installed" in error_line(capsys)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="not found; expected a directory with labels.csv"):
        main(["--debug", "train", CONFIG, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
