"""Run configuration: typed dataclasses, loaded from YAML and validated.

Every error is one line naming the key and what was expected (an unknown key gets a
"did you mean"); the CLI turns it into exit code 2. ``--set section.key=value`` overrides use the
same validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mcl.errors import ConfigError

FORMAT_VERSION = 1


@dataclass
class DataConfig:
    """Where the images come from: a generator or an image-table directory."""

    source: Literal["trifeature", "overlay", "table", "captioned-trifeature", "captioned-fashion-mnist",
                    "img2dataset", "webdataset"] = "trifeature"
    # image-table directory (source=table), where a generator writes, or the img2dataset folder /
    # WebDataset shard pattern (those are imported once into RUN_DIR/data as an image table)
    path: str | None = None
    image_size: int = 32
    n_train: int = 4000  # generators; img2dataset/webdataset: pairs read = n_train + n_test
    n_test: int = 1000  # generators; img2dataset/webdataset: the last n_test pairs are the test split
    seed: int = 0  # generators only
    on_bad_image: Literal["error", "skip"] = "error"
    cache: bool = True


@dataclass
class ModelConfig:
    """Backbone and projection head; each stage builds a fresh copy."""

    backbone: Literal["convnet", "resnet18"] = "convnet"
    width: float = 1.0  # channel multiplier
    projection_dim: int = 128
    hidden_dim: int = 512


@dataclass
class ObjectiveConfig:
    """Base contrastive objective (see ``mcl.objectives``)."""

    name: Literal["ntxent", "simclr", "dcl", "moco", "clip"] = "ntxent"
    temperature: float = 0.5
    queue_size: int = 4096  # moco: negatives kept from earlier batches (each with its pseudo-label)
    momentum: float = 0.99  # moco: EMA rate of the key encoder


@dataclass
class AugmentConfig:
    """Batched kornia augmentation; ``color_jitter`` is the jitter strength s of SimCLR."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: float = 0.5
    color_jitter: float = 0.5
    color_jitter_prob: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation of one stage."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: Literal["off", "bf16", "fp16"] = "off"
    compile: bool = False
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads; 0 = torch default


@dataclass
class MCLConfig:
    """The multistage part: stages, clustering and feature-aware negatives."""

    stages: int = 3
    clusters: int = 10
    negatives: Literal["batch", "mask"] = "batch"
    init: Literal["scratch", "previous"] = "scratch"
    integration: Literal["normalized-concat", "concat-then-normalize"] = "normalized-concat"
    min_group_size: int = 32
    kmeans_restarts: int = 5
    kmeans_iterations: int = 100
    kmeans_backend: Literal["auto", "torch", "faiss"] = "auto"
    spherical: bool = False


@dataclass
class EvalConfig:
    """Per-attribute probes and reference representations."""

    knn_k: int = 20
    linear_max_iter: int = 1000
    linear_c: float = 1.0
    ensemble: bool = True  # train the ensemble-k baseline
    references: bool = True  # random-init encoder and raw pixels
    paired_pairs: int = 500  # multimodal paired benchmark: image pairs per attribute


@dataclass
class MultimodalConfig:
    """Image-text (CLIP-style) MCL: a two-tower model per stage, clusters of its image embeddings.

    ``init``: where every stage's weights start. ``pretrained`` (default, as in the reference): each
    stage fine-tunes from the same initial model (the pretrained towers; for ``small`` one seeded
    random initialisation shared by all stages); ``previous``: from the previous stage; ``scratch``:
    a fresh per-stage seeded build (pretrained towers are still loaded, new parts draw new weights).
    ``stage0``: before stage 1, cluster the initial model's image embeddings as "stage 0", so that
    stage 1 already trains with feature-aware negatives.
    """

    enabled: bool = False
    model: Literal["small", "pretrained-towers", "open_clip", "hf-clip"] = "small"
    arch: str | None = None  # open_clip model name, e.g. "ViT-B-32"
    pretrained: str | None = None  # open_clip tag or checkpoint; hf-clip directory; pretrained-towers text model dir
    embed_dim: int = 128  # small and pretrained-towers (the adapters keep their own)
    init: Literal["pretrained", "previous", "scratch"] = "pretrained"
    stage0: bool = False
    integrate_stage0: bool = False  # the integrated model (mcl-k, mcl.load) also includes stage 0
    lock_image: bool = False
    unlocked_image_groups: int = 0  # with lock_image: the last N image layer groups stay trainable
    lock_text: bool = False
    unlocked_text_groups: int = 0
    init_temperature: float = 0.07
    context_length: int = 32
    image_resolution: int | None = None  # pretrained-towers: resize images to this size (None: keep)
    image_width: float = 1.0  # small: ConvNet channel multiplier
    text_width: int = 128  # small: transformer width
    text_layers: int = 2
    text_heads: int = 4
    # captioned-trifeature: probability of leaving each attribute's word out of a caption, e.g. {texture: 0.8}
    caption_drop_prob: dict[str, float] = field(default_factory=dict)


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mcl: MCLConfig = field(default_factory=MCLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), as written to ``config.yaml``."""
        return _plain(dataclasses.asdict(self))

    def validate(self) -> Config:
        """Check value ranges that types cannot express; returns self."""
        _check_ranges(self)
        return self


# Ranges checked after type validation: key -> (predicate, expectation).
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
    "mcl.stages": (lambda v: v >= 1, "a positive integer"),
    "mcl.clusters": (lambda v: v >= 2, "an integer >= 2"),
    "mcl.min_group_size": (lambda v: v >= 2, "an integer >= 2"),
    "mcl.kmeans_restarts": (lambda v: v >= 1, "a positive integer"),
    "mcl.kmeans_iterations": (lambda v: v >= 1, "a positive integer"),
    "eval.knn_k": (lambda v: v >= 1, "a positive integer"),
    "eval.linear_max_iter": (lambda v: v >= 1, "a positive integer"),
    "eval.linear_c": (lambda v: v > 0, "a positive number"),
    "eval.paired_pairs": (lambda v: v >= 1, "a positive integer"),
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


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _check_ranges(config: Config) -> None:
    for key, (ok, expected) in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not ok(value):
            raise ConfigError(f"config key '{key}': expected {expected}, got {value!r}")
    _check_multimodal(config)


WEB_SOURCES = ("img2dataset", "webdataset")


def _check_multimodal(config: Config) -> None:
    """Keys that only make sense together (each error names the key to change)."""
    from mcl.data.captions import TRIFEATURE_ATTRIBUTES

    multimodal = config.multimodal
    if (config.objective.name == "clip") != multimodal.enabled:
        raise ConfigError(f"config key 'objective.name': multimodal.enabled={multimodal.enabled} needs "
                          f"{'clip' if multimodal.enabled else 'a unimodal objective'}, got "
                          f"{config.objective.name!r}")
    if config.data.source in WEB_SOURCES and not config.data.path:
        raise ConfigError(f"config key 'data.path': required for data.source={config.data.source!r} "
                          "(the img2dataset folder or the WebDataset shard pattern)")
    unknown = sorted(set(multimodal.caption_drop_prob) - set(TRIFEATURE_ATTRIBUTES))
    if unknown:
        raise ConfigError(f"config key 'multimodal.caption_drop_prob': unknown attribute(s) {unknown}; "
                          f"expected some of {list(TRIFEATURE_ATTRIBUTES)}")
    if multimodal.model == "small" and multimodal.text_width % multimodal.text_heads:
        raise ConfigError(f"config key 'multimodal.text_heads': {multimodal.text_heads} does not divide "
                          f"multimodal.text_width={multimodal.text_width}")
    needed = {"open_clip": "arch", "hf-clip": "pretrained"}.get(multimodal.model)
    if multimodal.enabled and needed and not getattr(multimodal, needed):
        raise ConfigError(f"config key 'multimodal.{needed}': required for multimodal.model={multimodal.model!r}")
    if multimodal.integrate_stage0 and not multimodal.stage0:
        raise ConfigError("config key 'multimodal.integrate_stage0': needs multimodal.stage0: true")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + str(len(typing.get_args(tp))) + " numbers"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            type(None): "null"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; known keys: {', '.join(known)}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}': expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise _unknown_key(full, list(fields))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, full)
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Validate a nested dict (e.g. parsed YAML) into a :class:`Config`."""
    return _build(Config, values or {}, "").validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``section.key=value`` overrides, validate."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    apply_overrides(values, overrides or [])
    return config_from_dict(values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b=value`` strings (values parsed as YAML scalars) to a nested dict in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a config section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return values


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (atomic) as YAML."""
    from mcl.io import write_bytes

    header = f"# resolved mcl config, format version {FORMAT_VERSION}\n"
    write_bytes(path, (header + yaml.safe_dump(config.to_dict(), sort_keys=False)).encode())
