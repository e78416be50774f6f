"""The two-tower (CLIP-style) interface every image-text model implements, and its token helpers.

Every model is a :class:`TwoTowerModel`:

* ``encode_image(images)``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, embed_dim)``. Each model
  resizes/normalises inside (:class:`ImagePreprocess`), so callers never need to know a model's
  preprocessing.
* ``tokenize(texts)`` -> tokens (a tensor, or a dict of tensors for Hugging Face tokenizers), padded
  to a fixed length so a tokenized corpus can be indexed per batch (:func:`select_tokens`).
* ``encode_text(tokens)`` -> ``(B, embed_dim)``.
* ``logit_scale``: the learnable *log* inverse temperature (as in CLIP/open_clip/HF), fed to
  :class:`~mcl.objectives.clip.CLIPLoss`; ``embed_dim``: the shared embedding size.
* ``lock_image(unlocked_groups)`` / ``lock_text(unlocked_groups)``: freeze a tower except its last
  layer groups (open_clip semantics; locked groups stay in eval mode).

Embeddings are returned unnormalised; the loss and the evaluators L2-normalise them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcl.errors import ConfigError, MCLError
from mcl.models.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocess

Tokens = torch.Tensor | dict[str, torch.Tensor]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "ImagePreprocess", "Tokens",
           "TwoTowerModel", "select_tokens", "tokens_to"]

# ---------------------------------------------------------------------------------------------- helpers


def select_tokens(tokens: Tokens, index: torch.Tensor | slice) -> Tokens:
    """Rows ``index`` of a tokenized corpus (tensor or dict of tensors)."""
    if isinstance(tokens, dict):
        return {key: value[index] for key, value in tokens.items()}
    return tokens[index]


def tokens_to(tokens: Tokens, device: torch.device | str) -> Tokens:
    """Move tokens (tensor or dict of tensors) to ``device``."""
    if isinstance(tokens, dict):
        return {key: value.to(device) for key, value in tokens.items()}
    return tokens.to(device)


class ImagePreprocess(nn.Module):
    """Resize (bicubic, antialiased) to ``size`` if given, then ``(x - mean) / std``; input RGB in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def spec(self) -> Preprocess:
        """The same preprocessing as a :class:`~mcl.models.registry.Preprocess` (mean, std, input_size)."""
        return Preprocess(tuple(self.mean.flatten().tolist()), tuple(self.std.flatten().tolist()), self.size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> normalised ``(B, 3, size, size)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        images = images.float()
        if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0.0, 1.0)
        return (images - self.mean) / self.std


def _require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise a one-line MCLError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MCLError(f"this model needs the '{module}' package: pip install 'mcl[{extra}]'") from None


@contextlib.contextmanager
def _quiet_hf_loading(transformers: Any) -> Iterator[None]:
    """No "Loading weights" progress bar while loading (the caller's setting is restored)."""
    hf_logging = transformers.utils.logging
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _hf_tokenize(tokenizer: Any, texts: Sequence[str], length: int) -> dict[str, torch.Tensor]:
    """Hugging Face ids + attention mask, padded/truncated to ``length`` (other fields dropped)."""
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _require_dict(tokens: Tokens, model: str) -> dict[str, torch.Tensor]:
    if not isinstance(tokens, dict):
        raise TypeError(f"{model}.encode_text expects the dict returned by its tokenize()")
    return tokens


def _first_tensor(output: Any) -> torch.Tensor:
    # transformers < 5 returns the projected features; >= 5 a model output with them in pooler_output.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# ---------------------------------------------------------------------------------------------- interface


class TwoTowerModel(nn.Module):
    """Base class of image-text models; see the module docstring for the interface.

    Subclasses implement ``encode_image``, ``encode_text``, ``tokenize`` and list their layers in
    ``image_layer_groups`` / ``text_layer_groups`` (input to output) for partial freezing. Locked
    groups stay in eval mode through ``train()`` (frozen BatchNorm statistics, no dropout).
    """

    embed_dim: int

    def __init__(self) -> None:
        super().__init__()
        self._eval_groups: list[nn.Module] = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, embed_dim)``."""
        raise NotImplementedError

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """Tokens from :meth:`tokenize` -> ``(B, embed_dim)``."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Fixed-length tokens of ``texts`` on the CPU."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings in one call (what DDP wraps)."""
        return self.encode_image(images), self.encode_text(tokens)

    def image_layer_groups(self) -> list[nn.Module]:
        """Image tower layers grouped input to output (last = closest to the embedding)."""
        raise NotImplementedError

    def text_layer_groups(self) -> list[nn.Module]:
        """Text tower layers grouped input to output."""
        raise NotImplementedError

    def lock_image(self, unlocked_groups: int = 0, freeze_bn_stats: bool = True) -> None:
        """Freeze the image tower except its last ``unlocked_groups`` layer groups (open_clip semantics).

        ``unlocked_groups=0`` locks the whole tower (LiT). With ``freeze_bn_stats`` the locked groups
        also stay in eval mode, so BatchNorm running statistics stop changing (and dropout is off).
        New joining projections (e.g. :class:`~mcl.models.two_tower.pretrained.PretrainedTowers`') are
        not part of the tower and stay trainable.
        """
        self._lock_groups(self.image_layer_groups(), unlocked_groups, freeze_bn_stats, "image")

    def lock_text(self, unlocked_groups: int = 0) -> None:
        """Freeze the text tower except its last ``unlocked_groups`` layer groups (locked ones in eval mode)."""
        self._lock_groups(self.text_layer_groups(), unlocked_groups, True, "text")

    def _lock_groups(self, groups: list[nn.Module], unlocked: int, keep_eval: bool, tower: str) -> None:
        if not 0 <= unlocked <= len(groups):
            raise ConfigError(f"unlocked_groups: got {unlocked}; the {tower} tower has {len(groups)} groups")
        for group in groups[: len(groups) - unlocked]:
            for param in group.parameters():
                param.requires_grad_(False)
            if keep_eval:
                # A locked group is a fixed function: no BatchNorm statistics updates, no dropout.
                self._eval_groups.append(group)
                group.eval()

    def freeze_image_bn_stats(self) -> None:
        """Keep every BatchNorm of the image tower in eval mode, unlocked groups included.

        Fine-tuning then updates the layers' weights and BatchNorm's affine parameters but keeps the
        pretrained running statistics. Under MCL a batch holds one pseudo-label group, whose statistics
        are not the data's: updating running statistics from them shifts every feature at eval time.
        """
        for group in self._image_tower_modules():
            for module in group.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    self._eval_groups.append(module)
                    module.eval()

    def _image_tower_modules(self) -> list[nn.Module]:
        """The image tower as modules to walk (:meth:`freeze_image_bn_stats`): its layer groups."""
        return self.image_layer_groups()

    def train(self, mode: bool = True) -> TwoTowerModel:
        """Set train/eval mode, keeping locked groups (see ``lock_*``) in eval mode."""
        super().train(mode)
        for group in self._eval_groups:
            group.eval()
        return self

