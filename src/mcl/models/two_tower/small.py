"""SmallCLIP: a from-scratch two-tower model (ConvNet + small text transformer) for synthetic data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mcl.models.convnet import ConvNet
from mcl.models.text import TextTransformer, WordTokenizer
from mcl.models.two_tower.interface import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess, Tokens, TwoTowerModel
from mcl.objectives.clip import new_logit_scale


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

