"""Two-tower (CLIP-style) image-text models, built by name from a registry.

Modules: :mod:`~mcl.models.two_tower.interface` (:class:`TwoTowerModel`, tokens helpers),
:mod:`~mcl.models.two_tower.small` (:class:`SmallCLIP`, from scratch), :mod:`~mcl.models.two_tower.pretrained`
(:class:`PretrainedTowers`, LiT-style), :mod:`~mcl.models.two_tower.adapters` (:class:`OpenCLIPAdapter`,
:class:`HFCLIPAdapter`).

Registered names (``multimodal.model``): ``small``, ``pretrained-towers``, ``open_clip`` (with
``multimodal.arch``), ``hf-clip`` (with ``multimodal.pretrained``), and the prefixed forms
``open_clip:<arch>`` (e.g. ``open_clip:ViT-B-32``) and ``hf:<directory or hub name>``. Each entry maps
the fields of a :class:`~mcl.config.MultimodalConfig` to its own keyword arguments
(:func:`build_two_tower_from_config`)::

    @register_two_tower("mine", from_config=lambda mm, tokenizer, load_pretrained: {"embed_dim": mm.embed_dim})
    def mine(embed_dim: int = 128) -> TwoTowerModel: ...

A registered factory without ``from_config`` receives whichever of ``embed_dim``,
``init_temperature`` and ``context_length`` its signature takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from mcl.errors import ConfigError
from mcl.models.registry import Entry, Registry
from mcl.models.text import WordTokenizer
from mcl.models.two_tower.adapters import HFCLIPAdapter, OpenCLIPAdapter
from mcl.models.two_tower.interface import ImagePreprocess, Tokens, TwoTowerModel, select_tokens, tokens_to
from mcl.models.two_tower.pretrained import PretrainedTowers, minilm_path, split_image_tower
from mcl.models.two_tower.small import SmallCLIP

FromConfig = Callable[..., dict[str, Any]]


# ---------------------------------------------------------------------------------------------- prefixes


def _open_clip_entry(arch: str) -> Entry:
    def factory(pretrained: str | None = None, **kwargs: Any) -> TwoTowerModel:
        return OpenCLIPAdapter.from_pretrained(arch, pretrained, **kwargs)

    return Entry(f"open_clip:{arch}", factory, from_config=_open_clip_kwargs)


def _hf_entry(path: str) -> Entry:
    def factory(**kwargs: Any) -> TwoTowerModel:
        return HFCLIPAdapter.from_pretrained(path, **kwargs)

    return Entry(f"hf:{path}", factory, from_config=lambda mm, tokenizer, load_pretrained: {"local_files_only": True})


TWO_TOWER_MODELS = Registry("two-tower model", key="multimodal.model",
                            prefixes={"open_clip": _open_clip_entry, "hf": _hf_entry})


def register_two_tower(name: str, factory: Callable[..., TwoTowerModel] | None = None, *,
                       from_config: FromConfig | None = None) -> Any:
    """Register a two-tower factory (as a decorator when ``factory`` is omitted).

    ``from_config(mm, tokenizer, load_pretrained) -> kwargs`` picks the factory's arguments from a
    :class:`~mcl.config.MultimodalConfig`; see the module docstring for the default.
    """
    return TWO_TOWER_MODELS.register(name, factory, from_config=from_config)


def build_two_tower(name: str, /, **kwargs: Any) -> TwoTowerModel:
    """Build a registered two-tower model from explicit keyword arguments (checked first).

    ``"small"`` needs ``captions=`` (the tokenizer is fitted on them) or ``tokenizer=``;
    ``"pretrained-towers"`` takes :class:`PretrainedTowers`' arguments; ``"open_clip"`` takes
    ``name=``/``pretrained=`` (``name`` is positional-only here, so it can be passed on);
    ``"hf-clip"`` takes ``path_or_name=``; ``"open_clip:<arch>"`` takes ``pretrained=``.
    """
    return TWO_TOWER_MODELS.build(name, **kwargs)


def build_two_tower_from_config(mm: Any, tokenizer: WordTokenizer | None = None,
                                load_pretrained: bool = True) -> TwoTowerModel:
    """A fresh model of the kind ``mm.model`` names (a :class:`~mcl.config.MultimodalConfig`).

    Its random parts are drawn from torch's global RNG. ``tokenizer``: the run's word tokenizer
    (``small`` only). ``load_pretrained=False`` skips loading pretrained weights where the model allows
    it, for models whose weights are about to be overwritten anyway (the text tower of
    ``pretrained-towers`` and ``hf-clip`` models are always read from their directory).
    """
    entry = TWO_TOWER_MODELS.entry(mm.model)
    from_config = entry.from_config or _common_kwargs(entry)
    kwargs = from_config(mm, tokenizer=tokenizer, load_pretrained=load_pretrained)
    return TWO_TOWER_MODELS.build(mm.model, **kwargs)


def _common_kwargs(entry: Entry) -> FromConfig:
    def from_config(mm: Any, tokenizer: WordTokenizer | None, load_pretrained: bool) -> dict[str, Any]:
        fields = ("embed_dim", "init_temperature", "context_length")
        return {name: getattr(mm, name) for name in fields if name in entry.parameters()}

    return from_config


# ---------------------------------------------------------------------------------------------- built-in entries


def _require_field(mm: Any, field: str) -> Any:
    value = getattr(mm, field)
    if not value:
        raise ConfigError(f"config key 'multimodal.{field}': required for multimodal.model={mm.model!r}")
    return value


@register_two_tower("small", from_config=lambda mm, tokenizer, load_pretrained: {
    "tokenizer": tokenizer, "embed_dim": mm.embed_dim, "image_width": mm.image_width, "text_width": mm.text_width,
    "text_layers": mm.text_layers, "text_heads": mm.text_heads, "init_temperature": mm.init_temperature})
def small_clip(captions: Sequence[str] | None = None, tokenizer: WordTokenizer | None = None, context_length: int = 32,
               embed_dim: int = 128, image_width: float = 1.0, text_width: int = 128, text_layers: int = 2,
               text_heads: int = 4, causal: bool = True, pool: str = "eos",
               init_temperature: float = 0.07) -> SmallCLIP:
    """:class:`SmallCLIP` with the run's ``tokenizer``, or one fitted on ``captions``."""
    if tokenizer is None:
        if captions is None:
            raise ValueError("a 'small' two-tower model needs the run's tokenizer (or captions= to fit one)")
        tokenizer = WordTokenizer.fit(captions, context_length=context_length)
    return SmallCLIP(tokenizer, embed_dim=embed_dim, image_width=image_width, text_width=text_width,
                     text_layers=text_layers, text_heads=text_heads, causal=causal, pool=pool,
                     init_temperature=init_temperature)


register_two_tower("pretrained-towers", PretrainedTowers, from_config=lambda mm, tokenizer, load_pretrained: {
    "embed_dim": mm.embed_dim, "image_resolution": mm.image_resolution, "context_length": mm.context_length,
    "init_temperature": mm.init_temperature, "pretrained_image": load_pretrained, "text_model_path": mm.pretrained})


def _open_clip_kwargs(mm: Any, tokenizer: WordTokenizer | None, load_pretrained: bool) -> dict[str, Any]:
    return {"pretrained": mm.pretrained if load_pretrained else None}


register_two_tower("open_clip", OpenCLIPAdapter.from_pretrained, from_config=lambda mm, tokenizer, load_pretrained: {
    "name": _require_field(mm, "arch"), **_open_clip_kwargs(mm, tokenizer, load_pretrained)})


def _hf_clip(path_or_name: str | os.PathLike, **kwargs: Any) -> HFCLIPAdapter:
    """:meth:`HFCLIPAdapter.from_pretrained` (a directory, or a hub name when online)."""
    return HFCLIPAdapter.from_pretrained(path_or_name, **kwargs)


register_two_tower("hf-clip", _hf_clip, from_config=lambda mm, tokenizer, load_pretrained: {
    "path_or_name": _require_field(mm, "pretrained"), "local_files_only": True})


__all__ = ["TWO_TOWER_MODELS", "HFCLIPAdapter", "ImagePreprocess", "OpenCLIPAdapter", "PretrainedTowers", "SmallCLIP",
           "Tokens", "TwoTowerModel", "build_two_tower", "build_two_tower_from_config", "minilm_path",
           "register_two_tower", "select_tokens", "small_clip", "split_image_tower", "tokens_to"]
