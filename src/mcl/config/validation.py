"""Validation beyond types: value ranges, registered names (with did-you-mean), keys that go together.

Every error is one line naming the key and what was expected.
"""

from __future__ import annotations

import difflib
import typing
from typing import TYPE_CHECKING, Any

from mcl.errors import ConfigError

if TYPE_CHECKING:  # only a type here: the schema calls check_config, so importing it would be a cycle
    from mcl.config.schema import Config

WEB_SOURCES = ("img2dataset", "webdataset")

_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.image_size": (lambda v: 8 <= v <= 1024, "an integer in [8, 1024]"),
    "data.n_train": (lambda v: v >= 1, "a positive integer"),
    "data.n_test": (lambda v: v >= 0, "a non-negative integer"),
    "model.width": (lambda v: v > 0, "a positive number"),
    "model.projection_dim": (lambda v: v >= 1, "a positive integer"),
    "model.hidden_dim": (lambda v: v >= 1, "a positive integer"),
    "objective.temperature": (lambda v: v > 0, "a positive number"),
    "objective.queue_size": (lambda v: v >= 0, "a non-negative integer"),
    "objective.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "augment.crop_scale": (lambda v: 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    "augment.flip": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "augment.color_jitter": (lambda v: v >= 0, "a non-negative strength"),
    "augment.color_jitter_prob": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "augment.grayscale": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "augment.blur": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "train.epochs": (lambda v: v >= 1, "a positive integer"),
    "train.batch_size": (lambda v: v >= 2, "an integer >= 2"),
    "train.lr": (lambda v: v > 0, "a positive number"),
    "train.weight_decay": (lambda v: v >= 0, "a non-negative number"),
    "train.warmup_epochs": (lambda v: v >= 0, "a non-negative number"),
    "train.threads": (lambda v: v >= 0, "a non-negative integer"),
    "train.max_steps": (lambda v: v is None or v >= 1, "null or a positive integer"),
    "train.warmup_steps": (lambda v: v is None or v >= 0, "null or a non-negative integer"),
    "data.memory_budget_gb": (lambda v: v is None or v > 0, "null or a positive number"),
    "data.test_fraction": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "data.workers": (lambda v: v >= 0, "a non-negative integer"),
    "mcl.stages": (lambda v: v == "auto" or v >= 1, "a positive integer or 'auto'"),
    "mcl.max_stages": (lambda v: v >= 2, "an integer >= 2"),
    "mcl.clusters": (lambda v: v >= 2, "an integer >= 2"),
    "mcl.min_group_size": (lambda v: v >= 2, "an integer >= 2"),
    "mcl.kmeans_restarts": (lambda v: v >= 1, "a positive integer"),
    "mcl.kmeans_iterations": (lambda v: v >= 1, "a positive integer"),
    "mcl.kmeans_sample": (lambda v: v is None or v >= 2, "null or an integer >= 2"),
    "eval.knn_k": (lambda v: v >= 1, "a positive integer"),
    "eval.linear_max_iter": (lambda v: v >= 1, "a positive integer"),
    "eval.linear_c": (lambda v: v > 0, "a positive number"),
    "eval.paired_pairs": (lambda v: v >= 0, "a non-negative integer (0: off)"),
    "eval.view_images": (lambda v: v >= 0, "a non-negative integer (0: off)"),
    "eval.clip_blind_pairs": (lambda v: v >= 0, "a non-negative integer"),
    "multimodal.embed_dim": (lambda v: v >= 1, "a positive integer"),
    "multimodal.unlocked_image_groups": (lambda v: v >= 0, "a non-negative integer"),
    "multimodal.unlocked_text_groups": (lambda v: v >= 0, "a non-negative integer"),
    "multimodal.init_temperature": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "multimodal.context_length": (lambda v: v >= 3, "an integer >= 3"),
    "multimodal.image_resolution": (lambda v: v is None or 8 <= v <= 1024, "null or an integer in [8, 1024]"),
    "multimodal.image_width": (lambda v: v > 0, "a positive number"),
    "multimodal.text_width": (lambda v: v >= 1, "a positive integer"),
    "multimodal.text_layers": (lambda v: v >= 1, "a positive integer"),
    "multimodal.text_heads": (lambda v: v >= 1, "a positive integer"),
    "multimodal.caption_drop_prob": (lambda v: all(0 <= p <= 1 for p in v.values()),
                                     "a mapping of attribute -> probability in [0, 1]"),
}


def check_config(config: Config) -> None:
    """Raise a one-line :class:`ConfigError` for the first value the schema's types cannot rule out."""
    for key, (ok, expected) in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not ok(value):
            raise ConfigError(f"config key '{key}': expected {expected}, got {value!r}")
    _check_registered(config)
    _check_multimodal(config)
    _check_shard_order(config)


def _check_registered(config: Config) -> None:
    """Names of backbones, objectives and two-tower models must be registered (checked with their arguments)."""
    from mcl.models import check_backbone
    from mcl.models.two_tower import TWO_TOWER_MODELS
    from mcl.objectives import OBJECTIVES

    check_backbone(config.model.backbone, config.model.width, **config.model.backbone_args)
    _check_name("objective.name", config.objective.name, [*OBJECTIVES, "clip"])
    TWO_TOWER_MODELS.check(config.multimodal.model, {})


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
    if multimodal.integrate_stage0 and not multimodal.stage0:
        raise ConfigError("config key 'multimodal.integrate_stage0': needs multimodal.stage0: true")


