"""Each member of a multimodal run encodes each image set and text list once; representations are composed.

``mcl eval`` scores ``stage-0``, ``stage-s``, ``mcl-k``, ``finetune-k``, ...: ``mcl-k`` integrates
members that other representations hold alone, so encoding per representation encodes every member
again. :class:`MemberEmbeddings` keeps every member's raw (unnormalised) embeddings of an image array
(keyed by its content) or a text list (keyed by the texts), computed the first time any representation
asks, in one pass over the batches for all members. :class:`RepresentationEmbedder` (an
:class:`~mcl.embedding.Embedder`) gives a representation's embeddings from its members' with
:meth:`MultistageTwoTower.compose <mcl.modalities.image_text.task.MultistageTwoTower.compose>`, then L2-normalised as
:func:`~mcl.embedding.encode_images` does. Same batches (``batch_size``), same operations (composing and
normalising work row by row): the numbers are those of encoding with the representation's model.

**Shared locked layers.** Members whose locked layers hold equal weights (the fine-tuning recipe:
stage 0, every stage and every ``finetune-k`` share the whole text tower and the image tower but its
last ``unlocked_image_groups`` groups) run them once per batch: a
:class:`~mcl.models.two_tower.PretrainedTowers` member's image embedding is
``image_projection(suffix(prefix(images)))`` (:func:`mcl.modalities.image_text.align.split_image_tower`, exactly its
``encode_image``) and its text embedding ``text_projection(text_features(tokens))``; ``prefix`` and
``text_features`` run once per group of members with equal weights (compared tensor by tensor), the
rest per member. Any other two-tower model encodes whole.

Memory: ``(N, D)`` float32 per member, image set and text list (5000 images x 128-d: 2.5 MB a member).

Example:
    >>> store = MemberEmbeddings({"stage-1": s1, "stage-2": s2})
    >>> mcl2 = RepresentationEmbedder(store, MultistageTwoTower([s1, s2]), ("stage-1", "stage-2"))
    >>> mcl2.images(test.images)   # == encode_images(MultistageTwoTower([s1, s2]), test.images)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mcl.embedding import ImageBatch, images_to_tensor, model_device
from mcl.modalities.image_text.multistage import MultistageTwoTower
from mcl.models import evaluating
from mcl.models.two_tower import PretrainedTowers, tokens_to
from mcl.objectives.core import l2_normalize

Fn = Callable[[Any], torch.Tensor]

__all__ = ["MemberEmbeddings", "RepresentationEmbedder"]


@dataclass(frozen=True)
class _Part:
    """One tower of a member split in two: ``own(shared(x))`` is its embedding; ``shared`` runs once per ``key``."""

    key: int  # members with the same key compute ``shared`` once per batch
    shared: Fn
    own: Fn


def _tensors(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """Every parameter and buffer (non-persistent ones too: the preprocessing's mean and std)."""
    return [t for m in modules for t in itertools.chain(m.parameters(), m.buffers())]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b, strict=True))


class _Groups:
    """Keys of shared computations: equal signature and equal tensors -> the same key."""

    def __init__(self) -> None:
        self._seen: list[tuple[Any, list[torch.Tensor]]] = []

    def key(self, signature: Any, tensors: list[torch.Tensor]) -> int:
        for index, (other_signature, other) in enumerate(self._seen):
            if other_signature == signature and _equal(other, tensors):
                return index
        self._seen.append((signature, tensors))
        return len(self._seen) - 1


def _identity(x: Any) -> Any:
    return x


class MemberEmbeddings:
    """Raw embeddings of every member, of each image array and text list asked for, computed once.

    ``models``: member name -> two-tower model (one run: they share a tokenizer and a device).
    ``unlocked_image_groups``: for :class:`~mcl.models.two_tower.PretrainedTowers` members, the image
    tower groups after the shared prefix (``multimodal.unlocked_image_groups`` when the image tower is
    locked); None: image towers are not shared. ``batch_size``: that of the evaluators (256).
    """

    def __init__(self, models: Mapping[str, nn.Module], unlocked_image_groups: int | None = None,
                 batch_size: int = 256) -> None:
        if not models:
            raise ValueError("MemberEmbeddings needs at least one member")
        self.models = dict(models)
        self.batch_size = batch_size
        image_groups, text_groups = _Groups(), _Groups()
        self._image: dict[str, _Part] = {}
        self._text: dict[str, _Part] = {}
        for name, model in self.models.items():
            self._image[name], self._text[name] = _parts(name, model, unlocked_image_groups, image_groups,
                                                         text_groups)
        self._image_cache: dict[tuple, dict[str, torch.Tensor]] = {}
        self._text_cache: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}

    @property
    def shared_image_groups(self) -> int:
        """How many distinct image prefixes run per batch (fewer than members when locked layers are shared)."""
        return len({part.key for part in self._image.values()})

    @property
    def shared_text_groups(self) -> int:
        """How many distinct text towers run per batch."""
        return len({part.key for part in self._text.values()})

    def images(self, images: ImageBatch) -> dict[str, torch.Tensor]:
        """Every member's raw ``(N, D_m)`` embeddings of uint8 ``(N, H, W, 3)`` images, on the members' device."""
        key = _content_key(images)
        if key not in self._image_cache:
            device = model_device(next(iter(self.models.values())))
            self._image_cache[key] = self._encode(
                self._image, [images[s:s + self.batch_size] for s in range(0, len(images), self.batch_size)],
                lambda batch: images_to_tensor(batch).to(device))
        return self._image_cache[key]

    def texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Every member's raw ``(N, D_m)`` embeddings of ``texts`` (tokenized once, by the first member)."""
        key = tuple(str(t) for t in texts)
        if key not in self._text_cache:
            first = next(iter(self.models.values()))
            device = model_device(first)
            self._text_cache[key] = self._encode(
                self._text, [list(key[s:s + self.batch_size]) for s in range(0, len(key), self.batch_size)],
                lambda batch: tokens_to(first.tokenize(batch), device))
        return self._text_cache[key]

    def _encode(self, parts: dict[str, _Part], batches: list[Any], to_input: Fn) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {name: [] for name in parts}
        with contextlib.ExitStack() as stack:
            for model in self.models.values():
                stack.enter_context(evaluating(model))
            for batch in batches:
                x = to_input(batch)
                shared: dict[int, Any] = {}  # this batch's shared activations, freed after it
                for name, part in parts.items():
                    if part.key not in shared:
                        shared[part.key] = part.shared(x)
                    out[name].append(part.own(shared[part.key]))
        return {name: torch.cat(chunks) if chunks else torch.empty(0, 0) for name, chunks in out.items()}


def _parts(name: str, model: nn.Module, unlocked_image_groups: int | None, image_groups: _Groups,
           text_groups: _Groups) -> tuple[_Part, _Part]:
    """(image part, text part) of one member; only PretrainedTowers share layers with other members."""
    if not isinstance(model, PretrainedTowers):
        own = ("own", name)
        return (_Part(image_groups.key(own, []), _identity, model.encode_image),
                _Part(text_groups.key(own, []), _identity, model.encode_text))
    text = _Part(text_groups.key(("text", type(model.text_tower)), _tensors([model.text_tower])),
                 model.text_features, model.text_projection)
    if unlocked_image_groups is None:
        return _Part(image_groups.key(("own", name), []), _identity, model.encode_image), text
    from mcl.models.two_tower import split_image_tower

    prefix, suffix = split_image_tower(model, unlocked_image_groups)
    groups = model.image_layer_groups()
    locked = [model.preprocess, *groups[:len(groups) - unlocked_image_groups]]
    signature = ("image", type(model.image_tower), model.preprocess.size, unlocked_image_groups)
    image = _Part(image_groups.key(signature, _tensors(locked)), prefix,
                  lambda x: model.image_projection(suffix(x)))
    return image, text


@dataclass(frozen=True)
class RepresentationEmbedder:
    """:class:`~mcl.embedding.Embedder` of one representation from its members' embeddings in ``store``.

    ``model``: the representation (its :meth:`~mcl.modalities.image_text.task.MultistageTwoTower.compose` integrates);
    ``members``: the store's names of its members, in ``model.members`` order.
    """

    store: MemberEmbeddings
    model: MultistageTwoTower
    members: tuple[str, ...]

    def images(self, images: ImageBatch) -> torch.Tensor:
        """Normalised ``(N, D)`` embeddings, as :func:`~mcl.embedding.encode_images` of ``model``."""
        return self._compose(self.store.images(images))

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised ``(N, D)`` embeddings, as :func:`~mcl.embedding.encode_texts` of ``model``."""
        return self._compose(self.store.texts(texts))

    def _compose(self, raw: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [raw[m] for m in self.members]
        if not len(parts[0]):
            return torch.empty(0, 0)
        # As _encode_batched normalises each batch of model.encode_*: composition is row-wise, so the same rows.
        with torch.no_grad():
            return l2_normalize(self.model.compose(parts).float()).cpu()


def _content_key(images: ImageBatch) -> tuple:
    """(shape, dtype, sha256 of the bytes): equal arrays give equal keys (table subsets are new arrays)."""
    array = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    array = np.ascontiguousarray(array)
    return array.shape, array.dtype.str, hashlib.sha256(array.view(np.uint8).reshape(-1)).hexdigest()
