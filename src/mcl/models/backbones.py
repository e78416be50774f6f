"""The backbone registry: our plain-torch backbones by name, plus ``timm:<model>`` and ``torchvision:<model>``.

A backbone maps ``(B, 3, H, W)`` images to ``(B, F)`` features. Ours register next to their
definition (``@register_backbone("resnet18")``); a user's own registers the same way and can then be
named in a config's ``model.backbone``::

    @register_backbone("mine")
    class Mine(nn.Module): ...          # give it a ``feature_dim`` attribute

    check_backbone("mine", width=1.0, depth=3)   # what config validation calls (ConfigError, builds nothing)
    build_encoder("mine", 1.0, 128, 512, depth=3)

Prefixed names import their package only when resolved (a missing package is a one-line
ConfigError naming the pip package): ``timm:vit_tiny_patch16_224`` (``timm.create_model``, head
removed with ``num_classes=0``; features are ``num_features`` wide) and ``torchvision:resnet18`` (the
``fc``/``classifier`` head replaced by ``Identity``). Keyword arguments pass through to the library;
``pretrained`` is a *local* weights file (safetensors or ``torch.save``), never a hub download.
Their :class:`~mcl.models.registry.Preprocess` is ImageNet-style (timm: its ``pretrained_cfg``).

``width`` is a channel multiplier that only some backbones take; :func:`build_backbone` passes it
only to factories with a ``width`` parameter (any other value than 1 for the rest is a ConfigError).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from mcl.errors import ConfigError
from mcl.models.encoder import strip_classifier
from mcl.models.registry import (
    IDENTITY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Entry,
    Preprocess,
    Registry,
    did_you_mean,
    load_weights,
    require_package,
)

Weights = str | os.PathLike | bool | None


def _check_pretrained(name: str, pretrained: Weights) -> str | os.PathLike | None:
    if pretrained is True:
        raise ConfigError(f"config key 'model.backbone': {name!r} with pretrained=True would download weights; "
                          "pass pretrained=<local weights file> instead")
    return pretrained or None


# ---------------------------------------------------------------------------------------------- timm


def _timm_entry(model_name: str) -> Entry:
    timm = require_package("timm", "timm", f"config key 'model.backbone': 'timm:{model_name}'")
    if not timm.is_model(model_name):
        raise ConfigError(f"config key 'model.backbone': timm has no model {model_name!r}"
                          f"{did_you_mean(model_name, timm.list_models())}")
    cfg = timm.models.get_pretrained_cfg(model_name)
    preprocess = Preprocess(tuple(cfg.mean), tuple(cfg.std), None) if cfg is not None else IDENTITY

    def factory(pretrained: Weights = None, **kwargs: Any) -> nn.Module:
        path = _check_pretrained(f"timm:{model_name}", pretrained)
        kwargs.setdefault("num_classes", 0)  # features, not logits
        try:
            model = timm.create_model(model_name, pretrained=False, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"config key 'model.backbone': timm:{model_name}: {' '.join(str(exc).split())}") \
                from None
        if path is not None:
            classifier = model.pretrained_cfg.get("classifier") or ()
            heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
            load_weights(model, path, ignore_prefixes=heads if kwargs["num_classes"] == 0 else ())
        model.preprocess = Preprocess(preprocess.mean, preprocess.std, _fixed_input_size(model))
        return model

    return Entry(f"timm:{model_name}", factory, preprocess)


def _fixed_input_size(model: nn.Module) -> int | None:
    """The size a ViT-like timm model was built for, if it accepts no other (CNNs: None)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(embed, "img_size", None) is None:
        return None
    return int(embed.img_size[0])


# ---------------------------------------------------------------------------------------------- torchvision


def _torchvision_entry(model_name: str) -> Entry:
    torchvision = require_package("torchvision", "torchvision",
                                  f"config key 'model.backbone': 'torchvision:{model_name}'")
    known = torchvision.models.list_models(module=torchvision.models)
    if model_name not in known:
        raise ConfigError(f"config key 'model.backbone': torchvision has no classification model {model_name!r}"
                          f"{did_you_mean(model_name, known)}")
    builder = torchvision.models.get_model_builder(model_name)
    preprocess = Preprocess(IMAGENET_MEAN, IMAGENET_STD, None)

    def factory(pretrained: Weights = None, **kwargs: Any) -> nn.Module:
        path = _check_pretrained(f"torchvision:{model_name}", pretrained)
        try:
            model = builder(weights=None, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'model.backbone': torchvision:{model_name}: "
                              f"{' '.join(str(exc).split())}") from None
        if path is not None:
            load_weights(model, path)  # a full torchvision checkpoint, head included
        model.feature_dim = strip_classifier(model)
        # torchvision ViTs only take their build size.
        model.preprocess = Preprocess(preprocess.mean, preprocess.std, getattr(model, "image_size", None))
        return model

    return Entry(f"torchvision:{model_name}", factory, preprocess)


# ---------------------------------------------------------------------------------------------- registry


BACKBONES = Registry("backbone", key="model.backbone",
                     prefixes={"timm": _timm_entry, "torchvision": _torchvision_entry})


def register_backbone(name: str, *, preprocess: Preprocess = IDENTITY) -> Callable[[Any], Any]:
    """Decorator: register a backbone class or factory under ``name`` (``BACKBONES.register``)."""
    return BACKBONES.register(name, preprocess=preprocess)


def _with_width(name: str, width: float | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    entry = BACKBONES.entry(name)
    param = entry.parameters().get("width")
    if param is not None and param.kind != param.VAR_KEYWORD:
        return kwargs if width is None else {**kwargs, "width": width}
    if width is not None and width != 1.0:
        raise ConfigError(f"config key 'model.width': backbone {name!r} has no width multiplier; leave it at 1.0")
    return kwargs


def check_backbone(name: str, width: float | None = None, **kwargs: Any) -> None:
    """Raise a one-line ConfigError if :func:`build_backbone` would reject these arguments (builds nothing)."""
    BACKBONES.check(name, _with_width(name, width, kwargs))


def build_backbone(name: str, width: float | None = None, **kwargs: Any) -> nn.Module:
    """Instantiate a backbone; it carries ``preprocess`` (its registry entry's, unless it sets its own)."""
    kwargs = _with_width(name, width, kwargs)
    model = BACKBONES.build(name, **kwargs)
    if not isinstance(getattr(model, "preprocess", None), Preprocess):
        model.preprocess = BACKBONES.preprocess(name)
    return model
