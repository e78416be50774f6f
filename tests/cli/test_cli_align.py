"""``mcl align``: its parser, an existing checkpoint kept, --set parsed as the run config's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from mcl.cli.align import add_parser
from mcl.errors import ConfigError
from mcl.files import save_tensors
from mcl.modalities.image_text.align.checkpoint import METADATA_KEY


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", "--out", "x.safetensors", "--set", "steps=5", "--force"])
    assert args.out == "x.safetensors" and args.overrides == ["steps=5"] and args.force and callable(args.func)


def test_cli_keeps_an_existing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stage0.safetensors"
    save_tensors(path, {"w": torch.zeros(1)}, metadata={METADATA_KEY: json.dumps({"final_loss": 0.5})})
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", "--out", str(path), "--set", "steps=5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "exists" in out and '"final_loss": 0.5' in out
    with pytest.raises(ConfigError, match="expected key=value"):
        args.func(parser.parse_args(["align", "--out", str(path), "--set", "steps"]))
