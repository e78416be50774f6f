"""Settings of the aligned stage 0: :class:`AlignSettings`, read from ``configs/align.yaml`` plus overrides.

Every field is optional in the file (defaults below); :meth:`AlignSettings.digest` names the cache
file of the model they build, so any change of a setting builds a new model.

Example:
    >>> settings = load_align_settings(overrides={"steps": 500})
    >>> settings.digest()                                  # e.g. '3f2a9c0d1b7e'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mcl.errors import ConfigError

DEFAULT_SETTINGS_FILE = Path(__file__).parents[3] / "configs" / "align.yaml"


@dataclass(frozen=True)
class AlignSettings:
    """What ``configs/align.yaml`` holds (every field optional there); see that file for each one."""

    embed_dim: int = 128
    image_size: int = 32
    image_resolution: int | None = 64
    context_length: int = 16
    init_temperature: float = 0.07
    trifeature: int = 3000
    digits: int = 1000
    fashion_mnist: int = 1000
    corpus_seed: int = 1000
    unlocked_image_groups: int = 0
    steps: int = 1500
    batch_size: int = 256
    lr: float = 0.001
    weight_decay: float = 0.0001
    warmup_steps: int = 100
    seed: int = 0
    eval_trifeature: int = 500

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "image_resolution" and value is None:
                continue
            integer = str(field.type).startswith("int")
            if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
                raise ConfigError(f"align setting {field.name!r}: got {value!r}; expected "
                                  f"{'an integer' if integer else 'a number'}")
        positive = ("embed_dim", "image_size", "context_length", "steps", "batch_size", "lr")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"align setting {name!r}: got {getattr(self, name)!r}; expected > 0")
        for name in ("trifeature", "digits", "fashion_mnist", "warmup_steps", "unlocked_image_groups",
                     "eval_trifeature", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"align setting {name!r}: got {getattr(self, name)!r}; expected >= 0")
        if not 0 < self.init_temperature <= 1:
            raise ConfigError(f"align setting 'init_temperature': got {self.init_temperature}; expected (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short hash of the settings: the cache file name of the model they build."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def model_kwargs(self) -> dict[str, Any]:
        """:class:`PretrainedTowers` keyword arguments of the aligned model."""
        return {"embed_dim": self.embed_dim, "image_resolution": self.image_resolution,
                "context_length": self.context_length, "init_temperature": self.init_temperature}


def load_align_settings(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
                        ) -> AlignSettings:
    """Settings from a YAML mapping (default: the packaged ``configs/align.yaml``), then ``overrides``."""
    path = Path(path) if path is not None else DEFAULT_SETTINGS_FILE
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: align settings file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of align settings, got {type(values).__name__}")
    values = {**values, **(overrides or {})}
    known = {field.name for field in dataclasses.fields(AlignSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown align setting(s) {unknown}; expected some of {sorted(known)}")
    try:
        return AlignSettings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
