"""Adapters wrapping existing CLIP models: open_clip (:class:`OpenCLIPAdapter`), transformers (:class:`HFCLIPAdapter`).

Neither library is imported until a model is built from a name (``from_pretrained``); wrapping a
model object needs neither. Weights come from local files only when offline (``local_files_only``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl.errors import ConfigError, MCLError
from mcl.models.two_tower.interface import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocess,
    Tokens,
    TwoTowerModel,
    _first_tensor,
    _hf_tokenize,
    _quiet_hf_loading,
    _require,
    _require_dict,
)


class OpenCLIPAdapter(TwoTowerModel):
    """Wraps an ``open_clip`` model and tokenizer (extra ``openclip``).

    ``model`` must provide ``encode_image``, ``encode_text`` and ``logit_scale`` (any open_clip
    ``CLIP``/``CustomTextCLIP``); ``tokenizer`` maps a list of strings to ``(B, L)`` ids. Locking
    delegates to open_clip's own ``lock_image_tower`` / ``lock_text_tower``.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], embed_dim: int,
                 image_size: int, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                 std: Sequence[float] = OPENAI_CLIP_STD) -> None:
        super().__init__()
        self.model = model
        self._tokenizer = tokenizer
        self.embed_dim = embed_dim
        self.preprocess = ImagePreprocess(mean, std, image_size)

    @classmethod
    def from_pretrained(cls, name: str, pretrained: str | None = None, **kwargs: Any) -> OpenCLIPAdapter:
        """``open_clip.create_model_and_transforms(name, pretrained)`` + its tokenizer.

        ``pretrained`` is a tag (``"openai"``, ``"laion2b_s34b_b79k"``) or a local checkpoint file;
        ``kwargs`` go to ``create_model_and_transforms`` (e.g. ``cache_dir``).
        """
        open_clip = _require("open_clip", "openclip")
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        size = size[0] if isinstance(size, tuple | list) else size
        mean = getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN
        std = getattr(visual, "image_std", None) or OPENAI_CLIP_STD
        config = open_clip.get_model_config(name) or {}
        embed_dim = config.get("embed_dim") or getattr(visual, "output_dim", None)
        if embed_dim is None:
            raise MCLError(f"open_clip model {name!r}: cannot tell its embedding size")
        return cls(model, open_clip.get_tokenizer(name), int(embed_dim), int(size), mean, std)

    @property
    def logit_scale(self) -> nn.Parameter:  # type: ignore[override]
        """The wrapped model's log inverse temperature."""
        return self.model.logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, embed_dim)`` (resized to the model's input size)."""
        return self.model.encode_image(self.preprocess(images))

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """``(B, L)`` ids -> ``(B, embed_dim)``."""
        return self.model.encode_text(tokens)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """open_clip token ids ``(B, context_length)``."""
        return self._tokenizer(list(texts))

    def lock_image(self, unlocked_groups: int = 0, freeze_bn_stats: bool = True) -> None:
        """open_clip's ``lock_image_tower`` (its own layer grouping per architecture).

        open_clip's ResNet towers (``ModifiedResNet``) can only be locked whole; their bare
        ``AssertionError`` becomes a ConfigError saying so.
        """
        try:
            self.model.lock_image_tower(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats)
        except AssertionError as exc:
            tower = type(getattr(self.model, "visual", self.model)).__name__
            raise ConfigError(f"unlocked_groups={unlocked_groups}: open_clip's {tower} image tower only supports "
                              "locking it whole (multimodal.unlocked_image_groups: 0) or not at all "
                              f"(multimodal.lock_image: false); open_clip says: {' '.join(str(exc).split())}") \
                from None
        if freeze_bn_stats:
            self._keep_locked_in_eval()

    def _keep_locked_in_eval(self) -> None:
        """Keep every maximal submodule whose parameters are all frozen in eval mode (see :meth:`train`).

        open_clip's locking only stops gradients; mcl's contract is that a locked layer is a fixed function (no
        dropout, no BatchNorm statistics updates), as its own towers do. A parameterless module (dropout) inside
        a layer that still trains keeps the mode of that layer.
        """
        def visit(module: nn.Module) -> None:
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                if not any(module is kept for kept in self._eval_groups):
                    self._eval_groups.append(module)
                module.eval()
                return
            for child in module.children():
                visit(child)

        visit(self.model)

    def _image_tower_modules(self) -> list[nn.Module]:
        """``model.visual`` whole: open_clip's towers list no layer groups to walk."""
        return [self.model.visual]

    def lock_text(self, unlocked_groups: int = 0) -> None:
        """open_clip's ``lock_text_tower`` (models without one: non-visual parameters frozen); locked layers in eval."""
        if hasattr(self.model, "lock_text_tower"):
            self.model.lock_text_tower(unlocked_layers=unlocked_groups, freeze_layer_norm=True)
        else:
            if unlocked_groups:
                raise ConfigError("unlocked_groups: this open_clip model can only lock its whole text tower")
            for name, param in self.model.named_parameters():
                if not name.startswith("visual.") and name != "logit_scale":
                    param.requires_grad_(False)
        self._keep_locked_in_eval()


class HFCLIPAdapter(TwoTowerModel):
    """Wraps a ``transformers`` ``CLIPModel`` and its tokenizer (extra ``text``).

    Images are resized to ``config.vision_config.image_size`` and normalised with the processor's
    mean/std (``preprocessor_config.json``; OpenAI CLIP's values when absent). The image processor
    class itself is not used: it would pull in torchvision.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                 std: Sequence[float] = OPENAI_CLIP_STD, context_length: int | None = None) -> None:
        super().__init__()
        self.model = model
        self._hf_tokenizer = tokenizer
        self.embed_dim = int(model.config.projection_dim)
        self.context_length = context_length or int(model.config.text_config.max_position_embeddings)
        self.preprocess = ImagePreprocess(mean, std, int(model.config.vision_config.image_size))

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, **kwargs: Any) -> HFCLIPAdapter:
        """Load ``CLIPModel`` + tokenizer from a local directory (or a hub name when online).

        ``kwargs`` go to ``CLIPModel.from_pretrained`` (e.g. ``local_files_only=True``).
        """
        transformers = _require("transformers", "text")
        with _quiet_hf_loading(transformers):
            model = transformers.CLIPModel.from_pretrained(str(path_or_name), **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path_or_name))
        mean, std = _processor_stats(Path(path_or_name))
        return cls(model, tokenizer, mean, std)

    @property
    def logit_scale(self) -> nn.Parameter:  # type: ignore[override]
        """The wrapped model's log inverse temperature."""
        return self.model.logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, embed_dim)``."""
        return _first_tensor(self.model.get_image_features(pixel_values=self.preprocess(images)))

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """``{"input_ids", "attention_mask"}`` -> ``(B, embed_dim)``."""
        tokens = _require_dict(tokens, "HFCLIPAdapter")
        return _first_tensor(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                          attention_mask=tokens["attention_mask"]))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """BPE ids and attention mask padded/truncated to ``context_length``."""
        return _hf_tokenize(self._hf_tokenizer, texts, self.context_length)

    def image_layer_groups(self) -> list[nn.Module]:
        """Patch embeddings + pre-norm, each ViT layer, post-norm + visual projection."""
        vision = self.model.vision_model
        return [nn.ModuleList([vision.embeddings, vision.pre_layrnorm]), *vision.encoder.layers,
                nn.ModuleList([vision.post_layernorm, self.model.visual_projection])]

    def text_layer_groups(self) -> list[nn.Module]:
        """Token/position embeddings, each layer, final norm + text projection."""
        text = self.model.text_model
        return [text.embeddings, *text.encoder.layers,
                nn.ModuleList([text.final_layer_norm, self.model.text_projection])]


def _processor_stats(directory: Path) -> tuple[Sequence[float], Sequence[float]]:
    config = directory / "preprocessor_config.json"
    if not config.is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    try:
        stats = json.loads(config.read_text())
        return stats.get("image_mean", OPENAI_CLIP_MEAN), stats.get("image_std", OPENAI_CLIP_STD)
    except (OSError, json.JSONDecodeError) as exc:
        raise MCLError(f"{config}: not valid JSON ({exc})") from None

