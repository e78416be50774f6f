"""Shipped configs by name: ``mcl configs`` lists them, ``mcl train demo`` works from any directory."""

from __future__ import annotations

import pytest
import yaml

from mcl.cli import main
from mcl.cli.common import CONFIG_DIR, resolve_config, shipped_configs
from mcl.errors import ConfigError


def test_configs_lists_every_shipped_config(capsys) -> None:
    assert main(["configs"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [path.stem for path in sorted(CONFIG_DIR.glob("*.yaml"))]
    assert "demo" in listed and "multimodal" in listed


def test_configs_name_prints_the_yaml(capsys) -> None:
    assert main(["configs", "demo"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "configs/demo.yaml"])
def test_a_name_resolves_to_the_shipped_config_outside_the_repository(tmp_path, monkeypatch, name) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config(name) == str(shipped_configs()["demo"])


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("seed: 3\n")
    assert resolve_config("demo.yaml") == "demo.yaml"


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="shipped configs"):
        resolve_config("dmeo")
    assert main(["train", "dmeo", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "demo" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_demo_by_name_outside_the_repository(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["--set", "data.n_train=48", "--set", "data.n_test=16", "--set", "data.image_size=16",
            "--set", "model.width=0.25", "--set", "model.hidden_dim=16", "--set", "model.projection_dim=8",
            "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "mcl.stages=1",
            "--set", "eval.ensemble=false", "--set", "train.threads=1"]
    assert main(["train", "demo", "--out", "run", "--quiet", *tiny]) == 0
    assert (tmp_path / "run" / "stage-1" / "encoder.safetensors").exists()
