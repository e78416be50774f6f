"""Validation beyond types: value ranges (each field's :class:`~mcl.config.schema.Range`, declared beside it in
:mod:`mcl.config.schema`), registered names (with did-you-mean), keys that go together.

Every error is one line naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from mcl.config.schema import SEED, Config, Range
from mcl.errors import ConfigError

WEB_SOURCES = ("img2dataset", "webdataset")


def check_config(config: Config) -> Config:
    """Raise a one-line :class:`ConfigError` for the first value the schema's types cannot rule out; else return
    ``config``."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for key in dataclasses.fields(values) if dataclasses.is_dataclass(values) else ():
            valid: Range | None = key.metadata.get("range")
            value = getattr(values, key.name)
            if valid is not None and not valid.ok(value):
                raise ConfigError(f"config key '{section.name}.{key.name}': expected {valid.expected}, got {value!r}")
    if not SEED.ok(config.seed):  # the one top-level key
        raise ConfigError(f"config key 'seed': expected {SEED.expected}, got {config.seed!r}")
    _check_registered(config)
    _check_backbone_arg_types(config)
    _check_multimodal(config)
    _check_shard_order(config)
    return config


def _check_registered(config: Config) -> None:
    """Names of backbones, objectives and two-tower models must be registered (checked with their arguments)."""
    from mcl.models import check_backbone
    from mcl.models.two_tower import TWO_TOWER_MODELS
    from mcl.objectives import OBJECTIVES

    check_backbone(config.model.backbone, config.model.width, **config.model.backbone_args)
    _check_name("objective.name", config.objective.name, [*OBJECTIVES, "clip"])
    TWO_TOWER_MODELS.check(config.multimodal.model, {})


_SIMPLE_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def _check_backbone_arg_types(config: Config) -> None:
    """Each ``model.backbone_args`` value against its parameter's simple type (annotation or default's type).

    Parameters annotated with anything but ``int``/``float``/``bool``/``str``/``None`` unions are left to
    the backbone (a zoo model's own checks).
    """
    from mcl.models.backbones import BACKBONES

    try:
        parameters = BACKBONES.entry(config.model.backbone).parameters()
    except (ConfigError, KeyError, TypeError, ValueError):
        return
    for name, value in config.model.backbone_args.items():
        parameter = parameters.get(name)
        if parameter is None:
            continue
        expected = _simple_types(parameter)
        if expected is None:
            continue
        ok = any(isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool)) for tp in expected)
        ok = ok or (float in expected and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            names = " or ".join("null" if tp is type(None) else tp.__name__ for tp in expected)
            raise ConfigError(f"config key 'model.backbone_args.{name}': expected {names} for backbone "
                              f"{config.model.backbone!r}, got {value!r}")


def _simple_types(parameter: Any) -> tuple[type, ...] | None:
    annotation = parameter.annotation
    if isinstance(annotation, str):
        parts = [part.strip() for part in annotation.split("|")]
        if all(part in _SIMPLE_TYPES for part in parts):
            return tuple(_SIMPLE_TYPES[part] for part in parts)
        return None
    if annotation in _SIMPLE_TYPES.values():
        return (annotation,)
    default = parameter.default
    if annotation is parameter.empty and type(default) in (int, float, bool, str):
        return (type(default),)
    return None


def _check_name(key: str, name: str, known: list[str]) -> None:
    """A one-line error for a name no registry knows, with a did-you-mean."""
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"config key '{key}': unknown name {name!r}{hint}; registered: {', '.join(sorted(known))}")



def _check_shard_order(config: Config) -> None:
    """``data.shard_order: sequential`` needs ``data.residency: stream``; that the data are shards is checked
    when they are loaded (``--data DIR`` may still replace the source), by :class:`mcl.data.images.TrainingImages`."""
    data = config.data
    if data.shard_order == "sequential" and data.residency != "stream":
        raise ConfigError(f"config key 'data.shard_order': 'sequential' streams WebDataset shards and needs "
                          f"data.residency: stream, got {data.residency!r}")


def _check_multimodal(config: Config) -> None:
    """Keys that only make sense together (each error names the key to change)."""
    from mcl.data.captions import MARKED_TRIFEATURE_ATTRIBUTES, TRIFEATURE_ATTRIBUTES

    multimodal = config.multimodal
    if (config.objective.name == "clip") != multimodal.enabled:
        raise ConfigError(f"config key 'objective.name': multimodal.enabled={multimodal.enabled} needs "
                          f"{'clip' if multimodal.enabled else 'a unimodal objective'}, got "
                          f"{config.objective.name!r}")
    if config.data.source in WEB_SOURCES and not config.data.path:
        raise ConfigError(f"config key 'data.path': required for data.source={config.data.source!r} "
                          "(the img2dataset folder or the WebDataset shard pattern)")
    named = MARKED_TRIFEATURE_ATTRIBUTES if config.data.source == "captioned-trifeature-marked" \
        else TRIFEATURE_ATTRIBUTES
    unknown = sorted(set(multimodal.caption_drop_prob) - set(named))
    if unknown:
        raise ConfigError(f"config key 'multimodal.caption_drop_prob': unknown attribute(s) {unknown}; "
                          f"expected some of {list(named)}")
    if multimodal.model == "small" and multimodal.text_width % multimodal.text_heads:
        raise ConfigError(f"config key 'multimodal.text_heads': {multimodal.text_heads} does not divide "
                          f"multimodal.text_width={multimodal.text_width}")
    needed = {"open_clip": "arch", "hf-clip": "pretrained"}.get(multimodal.model)
    if multimodal.enabled and needed and not getattr(multimodal, needed):
        raise ConfigError(f"config key 'multimodal.{needed}': required for multimodal.model={multimodal.model!r}")
    if multimodal.stage0_checkpoint and multimodal.model != "pretrained-towers":
        raise ConfigError("config key 'multimodal.stage0_checkpoint': only for multimodal.model: pretrained-towers "
                          "(open_clip and hf-clip models load their own weights)")
    if config.eval.linear_max_iter == 0 and not multimodal.enabled:
        raise ConfigError("config key 'eval.linear_max_iter': got 0; expected a positive integer (0 turns the probe "
                          "off only in image-text runs: image runs are scored by it)")
    if multimodal.integrate_stage0 and not multimodal.stage0:
        raise ConfigError("config key 'multimodal.integrate_stage0': needs multimodal.stage0: true")


