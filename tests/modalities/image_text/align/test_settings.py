"""Align settings: the packaged file loads, overrides and bad values are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcl.errors import ConfigError
from mcl.modalities.image_text.align.settings import AlignSettings, load_align_settings


def test_packaged_settings_load_and_overrides_are_checked(tmp_path: Path) -> None:
    settings = load_align_settings()
    assert settings == AlignSettings(**settings.to_dict())
    assert load_align_settings(overrides={"steps": 10}).steps == 10
    assert load_align_settings(overrides={"steps": 10}).digest() != settings.digest()
    with pytest.raises(ConfigError, match="unknown align setting.*'stpes'"):
        load_align_settings(overrides={"stpes": 10})
    with pytest.raises(ConfigError, match="'lr'.*expected > 0"):
        load_align_settings(overrides={"lr": 0})
    with pytest.raises(ConfigError, match="'steps'.*expected an integer"):
        load_align_settings(overrides={"steps": "many"})
    with pytest.raises(ConfigError, match="'steps'.*expected an integer"):
        load_align_settings(overrides={"steps": 1.5})
    assert load_align_settings(overrides={"lr": 1, "image_resolution": None}).image_resolution is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_align_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_align_settings(tmp_path / "missing.yaml")
