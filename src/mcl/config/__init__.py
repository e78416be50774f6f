"""Run configuration: typed dataclasses (:mod:`~mcl.config.schema`), loaded from YAML and overrides
(:mod:`~mcl.config.loading`) and validated (:mod:`~mcl.config.validation`).

Example:
    >>> config = load_config("configs/demo.yaml", ["train.epochs=4"])
    >>> config.mcl.stages
    3
"""

from mcl.config.loading import apply_overrides, config_from_dict, load_config, save_config
from mcl.config.schema import (
    FORMAT_VERSION,
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    MCLConfig,
    ModelConfig,
    MultimodalConfig,
    ObjectiveConfig,
    TrainConfig,
)
from mcl.config.validation import WEB_SOURCES, check_config

__all__ = ["FORMAT_VERSION", "WEB_SOURCES", "AugmentConfig", "Config", "DataConfig", "EvalConfig", "MCLConfig",
           "ModelConfig", "MultimodalConfig", "ObjectiveConfig", "TrainConfig", "apply_overrides", "check_config",
           "config_from_dict", "load_config", "save_config"]
