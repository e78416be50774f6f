"""Compatibility re-exports: the two-tower models now live in :mod:`mcl.models.two_tower`."""

from __future__ import annotations

from mcl.models.two_tower import (
    TWO_TOWER_MODELS,
    HFCLIPAdapter,
    OpenCLIPAdapter,
    PretrainedTowers,
    SmallCLIP,
    build_two_tower,
    build_two_tower_from_config,
    minilm_path,
    register_two_tower,
)
from mcl.models.two_tower.interface import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocess,
    Tokens,
    TwoTowerModel,
    select_tokens,
    tokens_to,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "TWO_TOWER_MODELS", "HFCLIPAdapter",
           "ImagePreprocess", "OpenCLIPAdapter", "PretrainedTowers", "SmallCLIP", "Tokens", "TwoTowerModel",
           "build_two_tower", "build_two_tower_from_config", "minilm_path", "register_two_tower", "select_tokens",
           "tokens_to"]
