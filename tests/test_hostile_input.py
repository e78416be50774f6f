"""Hostile and careless input through the CLI (issue 20, items 5-8): a one-line error (exit 2) or a logged decision."""

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

from mcl.cli import main
from mcl.errors import RunDirError
from mcl.files import DATA_SHA256, load_tensors, load_tensors_with_metadata, save_tensors
from test_bad_input import CONFIG, TINY, error_line, train, write_images


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("table"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, table):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert train(table, out) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


@pytest.mark.parametrize(("override", "expected"), [
    ("seed=-1", "config key 'seed': expected an integer in [0, 4294967295], got -1"),
    ("seed=12345678901234567890", "config key 'seed': expected an integer in [0, 4294967295]"),
    ("objective.queue_size=99999999999999", "config key 'objective.queue_size': expected an integer in [0, "),
    ("model.projection_dim=99999999999", "config key 'model.projection_dim': expected an integer in [1, 65536]"),
    ("model.backbone_args={in_channels: three}",
     "config key 'model.backbone_args.in_channels': expected int for backbone 'convnet', got 'three'"),
    ("data.max_text_bytes=0", "config key 'data.max_text_bytes': expected an integer in [1, 1073741824]"),
    ("train.epochs={", "--set 'train.epochs={': the value is not valid YAML"),
])
def test_config_values_out_of_range(table, tmp_path, capsys, override, expected):
    assert train(table, tmp_path / "run", "--set", override) == 2
    assert expected in error_line(capsys)


def test_yaml_alias_bomb_is_refused_at_once(table, tmp_path, capsys):
    bomb = "\n".join(["model:", "  backbone_args:", "    a: &a [x, x, x, x, x, x, x, x, x, x]"]
                     + [f"    {chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                        f"*{chr(97 + i)}, *{chr(97 + i)}]" for i in range(9)])
    config = tmp_path / "bomb.yaml"
    config.write_text(bomb + "\n")
    started = time.perf_counter()
    assert main(["train", str(config), "--data", str(table), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert time.perf_counter() - started < 10
    assert "more than 10000 values once YAML aliases are expanded" in error_line(capsys)


def test_yaml_exponent_is_a_number():
    from mcl.config import load_config

    loaded = load_config(CONFIG, ["train.lr=1e-3", "data.n_train=1e3"])
    assert loaded.train.lr == 0.001 and loaded.data.n_train == 1000 and isinstance(loaded.data.n_train, int)


@pytest.mark.parametrize("entry", ["../outside.bin", "/etc/hostname", "/dev/zero", "stage-1/../../x"])
def test_manifest_entries_outside_the_run_are_refused(run_copy, table, capsys, entry):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["files"][entry] = "0" * 64
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    assert train(table, run_copy) == 2
    assert f"entry {entry!r} is not a path inside the run directory" in error_line(capsys)


def test_manifest_entry_linked_to_a_device_is_refused(run_copy, table, capsys):
    target = run_copy / "stage-1" / "clusters.json"
    target.unlink()
    os.symlink("/dev/zero", target)
    assert train(table, run_copy) == 2
    assert "not a regular file" in error_line(capsys)


def test_edited_clusters_json_is_refused(run_copy, table, capsys):
    path = run_copy / "stage-1" / "clusters.json"
    info = json.loads(path.read_text())
    info["inertia"] = 0.0
    path.write_text(json.dumps(info))
    assert train(table, run_copy) == 2
    assert "clusters.json: checksum differs" in error_line(capsys)


def test_min_group_size_above_n_is_an_error_before_training_or_an_allowed_warning(table, tmp_path, capsys):
    assert train(table, tmp_path / "run", "--set", "mcl.min_group_size=100") == 2
    assert "'mcl.min_group_size': 100 is larger than the training set (16 images)" in error_line(capsys)
    assert not (tmp_path / "run" / "stage-1").exists()  # refused before any stage trained
    allowed = ("--set", "mcl.min_group_size=100", "--set", "mcl.allow_single_group=true")
    assert train(table, tmp_path / "run", *allowed) == 0
    assert "(allowed by mcl.allow_single_group)" in capsys.readouterr().err


def test_embed_paths_with_a_newline_are_refused(finished_run, tmp_path, capsys):
    images = np.zeros((2, 16, 16, 3), np.uint8)
    from mcl.data import write_table

    data = write_table(tmp_path / "t", images, {"shape": ["a", "b"]}, ["test", "test"])
    (data / "images" / "000000.png").rename(data / "images" / "line\nbreak.png")
    text = (data / "labels.csv").read_text().replace("images/000000.png", '"images/line\nbreak.png"')
    (data / "labels.csv").write_text(text)
    out = tmp_path / "x.npy"
    assert main(["embed", str(finished_run), "--data", str(data), "--out", str(out), "--paths",
                 str(tmp_path / "p.txt"), "--quiet"]) == 2
    assert "holds a line break" in error_line(capsys)
    assert not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--image-size", "100000"], "image_size: got 100000; expected an integer in [8, 1024]"),
    (["--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
    (["--n-train", "99999999999999"], "n_train: got 99999999999999; expected an integer in [0, 100000000]"),
])
def test_generate_absurd_sizes(tmp_path, capsys, args, expected):
    assert main(["generate", "trifeature", "--out", str(tmp_path / "g"), "--quiet", *args]) == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "g").exists()


def _npy_with_header(path, shape, dtype="<f4", data=b""):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data)
    return path


def test_cluster_refuses_forged_headers_huge_values_and_a_file_as_out(tmp_path, capsys):
    forged = _npy_with_header(tmp_path / "forged.npy", (10**12, 10**6), data=b"\0" * 64)
    assert main(["cluster", "--embeddings", str(forged), "--clusters", "2", "--out", str(tmp_path / "o")]) == 2
    assert "forged.npy: not a readable .npy array" in error_line(capsys)
    big = tmp_path / "big.npy"
    values = np.random.default_rng(0).normal(size=(20, 4))
    values[3, 1] = 1e300
    np.save(big, values)
    assert main(["cluster", "--embeddings", str(big), "--clusters", "2", "--out", str(tmp_path / "o")]) == 2
    assert "big.npy: row 3 holds NaN, Inf or a value beyond" in error_line(capsys)
    fine = tmp_path / "fine.npy"
    np.save(fine, values[[0, 1, 2, 4, 5, 6, 7, 8]])
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["cluster", "--embeddings", str(fine), "--clusters", "2", "--out", str(afile)]) == 2
    assert "--out" in error_line(capsys) and afile.read_text() == "x"
    assert main(["cluster", "--embeddings", str(fine), "--clusters", "2", "--seed", "-1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--seed: expected an integer in [0, 4294967295]" in error_line(capsys)


def test_safetensors_metadata_is_written_in_sorted_order(tmp_path):
    metadata = {f"key{i}": str(i) for i in (5, 1, 9, 3, 7)}
    save_tensors(tmp_path / "a.safetensors", {"x": torch.arange(3.0)}, metadata=metadata)
    raw = (tmp_path / "a.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == sorted([*metadata, DATA_SHA256])
    tensors, loaded = load_tensors_with_metadata(tmp_path / "a.safetensors")
    assert loaded == metadata and tensors["x"].tolist() == [0.0, 1.0, 2.0]


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_tensors(path, {"w": torch.arange(64.0)}, metadata={"checkpoint": "{}"})
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="tensor bytes differ from the checksum recorded in it"):
        load_tensors_with_metadata(path)
    with pytest.raises(RunDirError, match="tensor bytes differ"):
        load_tensors(path)


def test_tiny_config_still_trains(table, tmp_path):  # the TINY overrides themselves stay valid
    assert main(["train", CONFIG, "--data", str(table), "--out", str(tmp_path / "r"), *TINY,
                 "--set", "mcl.stages=1"]) == 0
