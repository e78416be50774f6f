"""The locked-feature cache: the outputs of an image-text model's locked layers, computed once per process.

When the text tower is locked whole, the image tower is locked except its last
``unlocked_image_groups`` groups, the model is ``pretrained-towers`` and the augmentation is at most a
horizontal flip (:func:`locked_cache_blocker`; ``multimodal.cache_locked_features: auto``, the
paper's fine-tuning recipe), the locked parts are fixed functions of each training image and caption.
Their outputs (:class:`LockedFeatures`) are computed once: the image tower's locked prefix
(:func:`~mcl.models.two_tower.split_image_tower`) on every training image, and on its mirror image
when ``augment.flip > 0``, and the text features of every distinct caption. Every step of every stage
then trains ``image_projection(suffix(prefix_cache[index]))`` against
``text_projection(text_cache[caption])`` instead of running both towers.

One entry point, :meth:`LockedFeatureCache.serve`, returns a :class:`Served` view (or None: run the
full forward). Its two callers differ in one rule, the ``training`` flag:

* ``training=True`` (a step): the model's locked layers must be frozen and in eval mode; their
  weights are hashed once per model object; a cache of other weights is rebuilt, under the step's
  autocast, as the full forward would run.
* ``training=False`` (the embedding pass that k-means clusters, run in eval mode without gradients):
  the locked layers need not be frozen (their function is fixed by their weights); the digest is
  computed afresh (the model may have been loaded with other weights since); a missing cache is built
  only when training would build the same one (``train.amp: off``), so stage 0's pass builds what
  stage 1 trains on.

The cache is computed on the chunks the embedding pass cuts (:func:`~mcl.data.images.embed_chunks`),
so a served embedding is bit for bit the full forward's, and a served step is the full step up to
float rounding (``tests/modalities/image_text/test_cache.py``). Memory at ``image_resolution: 64``
with 2 unlocked groups (EfficientNet's stage 6 output, 192 x 2 x 2 float32): 3,072 bytes per image,
twice that with flips, plus 1,536 bytes per distinct caption (MiniLM's 384 floats).

Example:
    >>> cache = LockedFeatureCache(config, images, tokens, num_captions, device)
    >>> served = cache.serve(model, training=True)        # None: both towers run
    >>> image_emb, text_emb = served.pair_embeddings(index, captions, flips)
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.augment import to_float_images
from mcl.config import Config
from mcl.data.images import TrainingImages
from mcl.logging_utils import logger, record_time
from mcl.models.two_tower import PretrainedTowers, Tokens, select_tokens, split_image_tower
from mcl.models.two_tower.pretrained import ImageFn


def locked_cache_blocker(config: Config) -> str | None:
    """Why ``config``'s training cannot run on cached locked features (None: it can; see the module docstring).

    Needs ``pretrained-towers`` (its image tower splits into a locked prefix and a trainable suffix,
    :func:`~mcl.models.two_tower.split_image_tower`), the text tower locked whole, the image tower
    locked, an augmentation that is at most a horizontal flip (``crop_scale: [1.0, 1.0]`` crops the whole
    square image: the identity) and a single process (a cached step does not call the model's
    ``forward``, through which DDP synchronises gradients).
    """
    multimodal, augment = config.multimodal, config.augment
    if multimodal.cache_locked_features == "off":
        return "multimodal.cache_locked_features: off"
    if multimodal.model != "pretrained-towers":
        return f"multimodal.model {multimodal.model!r} (only pretrained-towers is split into cached and trained parts)"
    if not multimodal.lock_text or multimodal.unlocked_text_groups:
        return "the text tower is not locked whole (needs multimodal.lock_text: true, unlocked_text_groups: 0)"
    if not multimodal.lock_image:
        return "the image tower is not locked (multimodal.lock_image: false)"
    random = []
    if tuple(augment.crop_scale) != (1.0, 1.0):
        random.append(f"augment.crop_scale={list(augment.crop_scale)} (random resized crops; [1.0, 1.0] is cacheable)")
    if augment.color_jitter > 0 and augment.color_jitter_prob > 0:
        random.append("augment.color_jitter")
    random += [f"augment.{key}" for key in ("grayscale", "blur") if getattr(augment, key) > 0]
    if random:
        return "the augmentation changes the locked layers' input every step: " + ", ".join(random)
    if distributed.world_size() > 1:
        return "distributed training (a cached step bypasses DDP's gradient synchronisation)"
    return None


@dataclass
class LockedFeatures:
    """The locked parts' outputs, computed once (see the module docstring).

    ``image``: ``(N, C, h, w)`` locked-prefix activations of every training image (row = training
    index); ``flipped``: the same of the mirrored images (None when ``augment.flip`` is 0); ``text``:
    ``(M, D)`` text features, row = caption id; ``digest``: hash of the locked weights they were
    computed with; ``autocast``: the autocast dtype they were computed under (None: none, float32),
    since a cache serves only computations under the same autocast.
    """

    image: torch.Tensor
    flipped: torch.Tensor | None
    text: torch.Tensor
    digest: str
    autocast: torch.dtype | None = None

    @property
    def nbytes(self) -> int:
        """Memory the cache holds."""
        tensors = [self.image, self.text] + ([self.flipped] if self.flipped is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Served:
    """A model's trainable parts on :class:`LockedFeatures` of its locked weights: what the full forward computes."""

    model: PretrainedTowers
    suffix: ImageFn
    features: LockedFeatures

    def pair_embeddings(self, index: torch.Tensor, captions: torch.Tensor, flips: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings of training rows ``index`` (mirrored where ``flips``), text embeddings of caption ids."""
        activations = self.features.image[index]
        if self.features.flipped is not None and flips is not None:
            activations = torch.where(flips.view(-1, 1, 1, 1), self.features.flipped[index], activations)
        return (self.model.image_projection(self.suffix(activations)),
                self.model.text_projection(self.features.text[captions]))

    def image_embeddings(self, rows: np.ndarray) -> torch.Tensor:
        """L2-normalised float32 embeddings of the un-augmented training images ``rows`` (what k-means clusters)."""
        activations = self.features.image[torch.as_tensor(rows, device=self.features.image.device)]
        return torch.nn.functional.normalize(self.model.image_projection(self.suffix(activations)).float(), dim=1)


class LockedFeatureCache:
    """One process's :class:`LockedFeatures`, shared by every stage and model with the same locked weights.

    ``blocker``: why this run cannot use the cache (None: it can; :func:`locked_cache_blocker`).
    ``features``: the cache now held (None until a model is first served).
    """

    def __init__(self, config: Config, images: TrainingImages, tokens: Tokens, num_captions: int,
                 device: torch.device) -> None:
        self.config, self.images, self.tokens, self.num_captions, self.device = \
            config, images, tokens, num_captions, device
        self.unlocked = config.multimodal.unlocked_image_groups
        self.blocker = locked_cache_blocker(config)
        self.features: LockedFeatures | None = None
        # model -> the digest of its locked weights, None if the cache cannot train it (weak: models may be freed)
        self._training_digests: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()
        if self.blocker and config.multimodal.model == "pretrained-towers" \
                and config.multimodal.cache_locked_features == "auto":
            logger.info("multimodal: not caching the locked layers' outputs, both towers run every step: %s",
                        self.blocker)

    def serve(self, model: nn.Module, training: bool) -> Served | None:
        """``model`` on the cache of its locked outputs (built or rebuilt here if need be), or None: run it whole.

        ``training``: a training step's rules, else the embedding pass's (module docstring).
        """
        if self.blocker is not None:
            return None
        digest = self._training_digest(model) if training else self._embedding_digest(model)
        if digest is None:
            return None
        assert isinstance(model, PretrainedTowers)  # both digests are None for other models
        # Under train.amp, training caches under autocast: a cache the embedding pass built would serve no step.
        build = training or (self.config.train.amp == "off" and _autocast_dtype(self.device) is None)
        prefix, suffix = split_image_tower(model, self.unlocked)
        features = self.features
        if features is None or features.digest != digest or features.autocast != _autocast_dtype(self.device):
            if not build:
                return None
            features = self.features = self._compute(model, prefix, digest)
        return Served(model, suffix, features)

    def _training_digest(self, model: nn.Module) -> str | None:
        """The digest of ``model``'s locked weights when a step may train it on the cache, else None.

        Checked once per model object: a ``PretrainedTowers`` whose locked layers are frozen and in eval mode.
        """
        if model not in self._training_digests:
            digest = None
            if not isinstance(model, PretrainedTowers):
                logger.warning("multimodal: %s is no PretrainedTowers; training it without the locked-feature "
                               "cache", type(model).__name__)
            elif not all(_is_frozen(modules) for modules in _locked_modules(model, self.unlocked)):
                logger.warning("multimodal: the locked layers of this model train or are in train mode; training "
                               "it without the locked-feature cache")
            else:
                digest = _locked_digest(model, self.unlocked)
            self._training_digests[model] = digest
        return self._training_digests[model]

    def _embedding_digest(self, model: nn.Module) -> str | None:
        """The digest of ``model``'s locked weights, computed afresh (None: no ``PretrainedTowers``)."""
        return _locked_digest(model, self.unlocked) if isinstance(model, PretrainedTowers) else None

    @torch.no_grad()
    def _compute(self, model: PretrainedTowers, prefix: ImageFn, digest: str) -> LockedFeatures:
        """The locked prefix of every training image (and its mirror image), the text features of every caption.

        Called inside the training step, so under the step's autocast, as the full forward would run, or by
        the embedding pass (no autocast). The images are cut into the chunks the embedding pass cuts
        (:meth:`TrainingImages.batches`), so that pass reads the prefix its full forward would compute.
        """
        started = time.perf_counter()
        flip = self.config.augment.flip > 0
        num_samples = self.images.num_samples
        image, flipped = [], []
        for batch in self.images.batches(np.arange(num_samples)):
            images = to_float_images(batch)
            image.append(prefix(images))
            if flip:
                flipped.append(prefix(images.flip(-1)))
        rows = torch.arange(self.num_captions, device=self.device)
        text = torch.cat([model.text_features(select_tokens(self.tokens, chunk)) for chunk in rows.split(256)])
        features = LockedFeatures(torch.cat(image), torch.cat(flipped) if flip else None, text, digest,
                                  _autocast_dtype(self.device))
        seconds = time.perf_counter() - started
        record_time("locked-feature cache", seconds)
        logger.info("multimodal: cached the locked layers' outputs of %d images%s and %d captions in %.1f s "
                    "(%.1f MB, %d bytes per image)", num_samples, " (and their mirror images)" if flip else "",
                    len(text), seconds, features.nbytes / 1e6,
                    features.image[0].numel() * features.image.element_size() * (2 if flip else 1))
        return features


def _locked_modules(model: PretrainedTowers, unlocked: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """(the image tower's locked groups, the text tower's groups)."""
    groups = model.image_layer_groups()
    return groups[:len(groups) - unlocked], model.text_layer_groups()


def _is_frozen(modules: Sequence[nn.Module]) -> bool:
    """No parameter trains and every submodule is in eval mode (frozen BatchNorm statistics, no dropout).

    ``nn.ModuleList`` containers are skipped: they never run, and ``layer_groups()`` builds new ones per call.
    """
    return not any(p.requires_grad for m in modules for p in m.parameters()) and \
        not any(sub.training for m in modules for sub in m.modules() if not isinstance(sub, nn.ModuleList))


def _locked_digest(model: PretrainedTowers, unlocked: int) -> str:
    """sha256 of everything the cached outputs depend on: the locked weights and buffers, the input size."""
    image_groups, _ = _locked_modules(model, unlocked)
    digest = hashlib.sha256(f"{unlocked}:{model.preprocess.size}".encode())
    for module in (model.preprocess, model.text_tower, *image_groups):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` here (``train.amp``), None when autocast is off."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
