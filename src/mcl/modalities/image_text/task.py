"""Image-text (CLIP-style) MCL on the same stage loop as the unimodal case.

:class:`ImageTextTask` is the multimodal :class:`~mcl.tasks.StageTask`: every stage trains a two-tower
model (:mod:`mcl.models.clip`) with :class:`~mcl.objectives.clip.CLIPLoss`, whose negatives are
restricted to the pseudo-label groups; the stage's clusters come from its L2-normalised *image*
embeddings of the training set. :func:`mcl.stages.run_stages` is used unchanged, plus an optional
stage 0 (``multimodal.stage0``): the initial (e.g. pretrained) model's clusters, so that stage 1
already trains with feature-aware negatives.

:class:`MultistageTwoTower` integrates the stages of a run for *both* towers: its ``encode_image`` and
``encode_text`` concatenate the per-stage embeddings (``mcl.integration``), so image-text similarity
is the sum of the stages' similarities and every evaluator of two-tower models (zero-shot,
retrieval, MMVP) scores the integrated model as is.

Run directory additions: ``tokenizer.json`` (``small`` models: the word vocabulary fitted once on the
training captions, shared by every stage) and ``stage-0/`` (weights and clusters of the initial model).

**Locked-feature cache** (``multimodal.cache_locked_features: auto``, the paper's fine-tuning recipe,
``configs/multimodal.yaml``). When the text tower is locked whole, the image tower is locked
except its last ``unlocked_image_groups`` groups, the model is ``pretrained-towers`` and the augmentation
is at most a horizontal flip (:func:`locked_cache_blocker`), the locked parts are fixed functions of
each training image and caption: their outputs are computed once per process (the image tower's
locked prefix on every training image, and on its mirror image when ``augment.flip > 0``; the text
features of every distinct caption) and every step of every stage (and of the finetune-k baseline)
trains ``image_projection(suffix(prefix_cache[index]))`` against ``text_projection(text_cache[caption])``
instead of running both towers (:class:`LockedFeatures`). The flip of each sample is the augmentation's
own draw (``forward_parameters``: the same global RNG stream as the full path), so a cached step is the
full step up to float rounding (``tests/test_multimodal_cache.py``). Locked groups are in eval mode
(frozen BatchNorm statistics, no dropout), so their outputs do not depend on the batch; unlocked
groups run in train mode on the cached activations exactly as in the full forward. Before a model
uses the cache the locked weights are checked against the cache's (sha256 of their state); a model
with other locked weights rebuilds it. The embedding pass after each stage (:meth:`ImageTextTask.embed`, what
k-means clusters) uses the cache too: it runs ``image_projection(suffix(prefix_cache[rows]))`` on the very
chunks the cache was computed on, which is bit for bit the full forward's embedding, and stage 0's pass
builds the cache that stage 1 then trains on. Memory at ``image_resolution: 64`` with 2 unlocked groups
(EfficientNet's stage 6 output, 192 x 2 x 2 float32): 3,072 bytes per image, twice that with flips,
plus 1,536 bytes per distinct caption (MiniLM's 384 floats): 24.6 MB for 4000 flipped images.
Otherwise (random resized crops, colour jitter, DDP, ...) both towers run every step and the reason is logged.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.augment import build_augmentation, to_float_images
from mcl.config import Config, MultimodalConfig
from mcl.data.images import TrainingImages, embed_chunks
from mcl.data.loader import Batch, BatchSampler, Loader
from mcl.data.table import ImageTable
from mcl.embedding import encode_images
from mcl.embedding_file import EmbeddingFile
from mcl.errors import ConfigError, DataError, RunDirError
from mcl.files import read_json, write_json
from mcl.integration import check_integration_mode, integrate
from mcl.logging_utils import logger, record_time
from mcl.models import evaluating, unwrap_model
from mcl.models.text import WordTokenizer
from mcl.models.two_tower import (
    PretrainedTowers,
    Tokens,
    TwoTowerModel,
    build_two_tower_from_config,
    select_tokens,
    tokens_to,
)
from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_
from mcl.run import TOKENIZER_FILE, RunDirectory
from mcl.tasks import embed_images, embed_in_shards, seeded_build, stage_seed

# ---------------------------------------------------------------------------------------------- models


def lock_towers(model: TwoTowerModel, config: MultimodalConfig) -> None:
    """Freeze the towers as configured (``lock_image`` / ``lock_text`` with their unlocked groups)."""
    for tower, locked, unlocked in (("image", config.lock_image, config.unlocked_image_groups),
                                    ("text", config.lock_text, config.unlocked_text_groups)):
        if not locked:
            continue
        try:
            getattr(model, f"lock_{tower}")(unlocked)
        except ConfigError as exc:
            raise ConfigError(f"config key 'multimodal.unlocked_{tower}_groups': {exc}") from None
    if config.freeze_bn_stats:
        model.freeze_image_bn_stats()


def run_tokenizer(config: Config, captions: Sequence[str], run: RunDirectory) -> WordTokenizer | None:
    """``small`` models: the word tokenizer of the run, fitted once on the training captions.

    Written to ``RUN_DIR/tokenizer.json`` (recorded in the manifest) and read back on resume, so all
    stages, ensemble members and :func:`load_run_two_tower` share one vocabulary. None for models
    that bring their own tokenizer.
    """
    if config.multimodal.model != "small":
        return None
    saved = _saved_tokenizer(run)
    if saved is not None:
        return saved
    tokenizer = WordTokenizer.fit(captions, context_length=config.multimodal.context_length)
    if distributed.is_main_process():
        path = run.root / TOKENIZER_FILE
        write_json(path, tokenizer.to_dict())
        run.record(path)
    distributed.barrier()
    return tokenizer


def _saved_tokenizer(run: RunDirectory) -> WordTokenizer | None:
    """The run's recorded word tokenizer, or None if there is none (yet)."""
    path = run.root / TOKENIZER_FILE
    return WordTokenizer.from_dict(read_json(path)) if run.is_finished(path) else None


def load_run_two_tower(config: Config, run_dir: str | Path) -> TwoTowerModel:
    """An untrained model of a run's architecture (tokenizer from the run), ready for ``load_state_dict``."""
    tokenizer = None
    if config.multimodal.model == "small":
        run = RunDirectory(run_dir)
        tokenizer = _saved_tokenizer(run)
        if tokenizer is None:
            raise RunDirError(f"{run.root / TOKENIZER_FILE}: missing or unrecorded; it is written when training "
                              "starts")
    return build_two_tower_from_config(config.multimodal, tokenizer, load_pretrained=False)


# ---------------------------------------------------------------------------------------------- locked-feature cache

ImageFn = Callable[[torch.Tensor], torch.Tensor]


def locked_cache_blocker(config: Config) -> str | None:
    """Why ``config``'s training cannot run on cached locked features (None: it can; see the module docstring).

    Needs ``pretrained-towers`` (its image tower splits into a locked prefix and a trainable suffix,
    :func:`mcl.modalities.image_text.align.split_image_tower`), the text tower locked whole, the image tower locked, an
    augmentation that is at most a horizontal flip (``crop_scale: [1.0, 1.0]`` crops the whole square
    image: the identity) and a single process (a cached step does not call the model's ``forward``,
    through which DDP synchronises gradients).
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
    ``(M, D)`` text features, row = caption id (the task's ``caption_ids``); ``digest``: hash of the
    locked weights they were computed with; ``autocast``: the autocast dtype they were computed under
    (None: none, float32), since a cache serves only computations under the same autocast.
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


# ---------------------------------------------------------------------------------------------- the task


class ImageTextTask:
    """CLIP training on (image, caption) pairs with MCL's pseudo-label negatives.

    Images live on the device as uint8. Captions are tokenized once (fixed length); each batch
    encodes every *distinct* caption once and shares the embedding between the pairs that repeat it
    (synthetic captions repeat a lot: same result, a fraction of the text-tower cost).
    ``config.augment`` is applied to the images (keep colour jitter off when captions name
    colours). The initial model (:attr:`initial`, seeded with ``stage_seed(config, 0)``) is what
    ``multimodal.init: pretrained`` starts every stage from and what stage 0 clusters. When the towers
    are locked as the fine-tuning recipe locks them, steps train on :attr:`locked_features` instead
    (``multimodal.cache_locked_features``; see the module docstring).
    """

    def __init__(self, config: Config, table: ImageTable, device: torch.device, run: RunDirectory) -> None:
        if table.captions is None:
            raise DataError(f"{table.root / 'labels.csv'}: no 'caption' column; multimodal training needs captions")
        self.config = config
        self.device = device
        self.num_samples = len(table)
        self.images = TrainingImages(table.images, device, config.data.workers, config.seed,
                                     config.data.shard_order)
        self.tokenizer = run_tokenizer(config, table.captions, run)
        torch.manual_seed(stage_seed(config, 0))
        self.initial = build_two_tower_from_config(config.multimodal, self.tokenizer).to(device)
        # An aligned stage 0 (built and cached when missing); a run that recorded stage 0 reloads it from
        # its own stage-0/ (initial_stage), so resuming never depends on the cache.
        if config.multimodal.stage0_checkpoint and not run.has_stage0():
            from mcl.modalities.image_text.align import load_stage0_into

            load_stage0_into(self.initial, config.multimodal.stage0_checkpoint)
        distinct, caption_ids = np.unique(np.asarray(table.captions, dtype=str), return_inverse=True)
        self.caption_ids = torch.from_numpy(caption_ids.reshape(-1)).to(device)
        self.num_captions = len(distinct)
        self.tokens = tokens_to(self.initial.tokenize([str(c) for c in distinct]), device)  # one row per caption
        self.augment = build_augmentation(config.augment, self.images.image_size).to(device)
        self.objective = CLIPLoss()
        # Locked-feature cache (module docstring): built on the first step, shared by every stage.
        self.cache_blocker = locked_cache_blocker(config)
        self.locked_features: LockedFeatures | None = None
        # model -> the digest of its locked weights, None if the cache cannot serve it (weak: models may be freed)
        self._locked_digests: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()
        if self.cache_blocker and config.multimodal.model == "pretrained-towers" \
                and config.multimodal.cache_locked_features == "auto":
            logger.info("multimodal: not caching the locked layers' outputs, both towers run every step: %s",
                        self.cache_blocker)

    def build_model(self, seed: int, previous: nn.Module | None = None) -> TwoTowerModel:
        """The stage's starting model (``multimodal.init``), towers locked as configured."""
        init = self.config.multimodal.init
        with seeded_build(seed):  # same weights on every rank, but each rank its own augmentations
            model = build_two_tower_from_config(self.config.multimodal, self.tokenizer,
                                                load_pretrained=init == "scratch")
            if init == "previous" and previous is not None:
                model.load_state_dict(unwrap_model(previous).state_dict())
            elif init != "scratch":  # "pretrained", and "previous" for the first stage
                model.load_state_dict(self.initial.state_dict())
            lock_towers(model, self.config.multimodal)
        return model.to(self.device)

    def loader(self, batch_sampler: BatchSampler) -> Loader:
        """Batches ``{"index", "image"}`` (resident or streamed); :meth:`loss` looks captions up by ``index``."""
        return self.images.loader(batch_sampler)

    def loss(self, model: nn.Module, batch: Batch, pseudo_labels: torch.Tensor | None) -> torch.Tensor:
        """CLIP loss of one batch of pairs (``model`` may be DDP-wrapped: its ``forward`` is called).

        The temperature is clamped here, before it is used, instead of after each optimiser step
        (the training loop is shared with unimodal tasks): the value every step sees is the same.
        """
        inner = unwrap_model(model)
        clamp_logit_scale_(inner.logit_scale)
        pair_ids = self.caption_ids[batch["index"]]
        captions, pair_caption = torch.unique(pair_ids, return_inverse=True)
        suffix = self._cached_suffix(inner)
        if suffix is None:
            images = self.augment(to_float_images(batch["image"]))
            image_emb, caption_emb = model(images, select_tokens(self.tokens, captions))
        else:
            image_emb, caption_emb = self._cached_embeddings(inner, suffix, batch["index"], captions)
        # Identical captions are not negatives of each other (many repeat inside a pseudo-label group).
        same_caption = pair_ids if self.config.multimodal.mask_duplicate_captions else None
        return self.objective(image_emb, caption_emb[pair_caption], inner.logit_scale, pseudo_labels,
                              caption_ids=same_caption)

    def _cached_suffix(self, model: nn.Module) -> ImageFn | None:
        """``model``'s trainable image suffix when cached features serve it (cache built on demand), else None.

        Checked once per model object (its locked layers must be frozen and in eval mode; their weights
        are hashed); the cache is (re)built whenever it holds another model's locked outputs.
        """
        if self.cache_blocker is not None:
            return None
        unlocked = self.config.multimodal.unlocked_image_groups
        if model not in self._locked_digests:
            digest = None
            if not isinstance(model, PretrainedTowers):
                logger.warning("multimodal: %s is no PretrainedTowers; training it without the locked-feature "
                               "cache", type(model).__name__)
            elif not all(_is_frozen(modules) for modules in _locked_modules(model, unlocked)):
                logger.warning("multimodal: the locked layers of this model train or are in train mode; training "
                               "it without the locked-feature cache")
            else:
                digest = _locked_digest(model, unlocked)
            self._locked_digests[model] = digest
        digest = self._locked_digests[model]
        return None if digest is None else self._serving_suffix(model, digest)

    def _serving_suffix(self, model: PretrainedTowers, digest: str, build: bool = True) -> ImageFn | None:
        """``model``'s unlocked image suffix, :attr:`locked_features` holding the outputs of its locked layers
        (weights ``digest``): rebuilt when they hold another model's, unless ``build`` is False (then None)."""
        from mcl.modalities.image_text.align import split_image_tower

        prefix, suffix = split_image_tower(model, self.config.multimodal.unlocked_image_groups)
        if not self._cache_serves(digest):
            if not build:
                return None
            self.locked_features = self._compute_locked_features(model, prefix, digest)
        return suffix

    def _cache_serves(self, digest: str) -> bool:
        """Whether :attr:`locked_features` hold the outputs of locked weights ``digest`` under the current autocast."""
        features = self.locked_features
        return features is not None and features.digest == digest and features.autocast == _autocast_dtype(self.device)

    @torch.no_grad()
    def _compute_locked_features(self, model: PretrainedTowers, prefix: ImageFn, digest: str) -> LockedFeatures:
        """The locked prefix of every training image (and its mirror image), the text features of every caption.

        Called inside the training step, so under the step's autocast, as the full forward would run, or by
        the embedding pass (no autocast). The images are cut into the chunks the embedding pass cuts
        (:meth:`TrainingImages.batches`), so that pass reads the prefix its full forward would compute.
        """
        started = time.perf_counter()
        flip = self.config.augment.flip > 0
        image, flipped = [], []
        for batch in self.images.batches(np.arange(self.num_samples)):
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
                    "(%.1f MB, %d bytes per image)", self.num_samples, " (and their mirror images)" if flip else "",
                    len(text), seconds, features.nbytes / 1e6,
                    features.image[0].numel() * features.image.element_size() * (2 if flip else 1))
        return features

    def _cached_embeddings(self, model: PretrainedTowers, suffix: ImageFn, index: torch.Tensor,
                           captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and caption embeddings of a batch from :attr:`locked_features` (what ``model(...)`` computes)."""
        features = self.locked_features
        assert features is not None  # built by _cached_suffix
        flips = self._draw_flips(len(index))
        activations = features.image[index]
        if features.flipped is not None and flips is not None:
            activations = torch.where(flips.view(-1, 1, 1, 1), features.flipped[index], activations)
        return model.image_projection(suffix(activations)), model.text_projection(features.text[captions])

    def _draw_flips(self, batch_size: int) -> torch.Tensor | None:
        """Which samples the augmentation mirrors this step, drawn as ``self.augment`` draws them.

        ``forward_parameters`` draws every step's parameters (the identity crop's too) from the global
        RNG exactly as a call of the augmentation would, so cached and full runs see the same flips.
        """
        size = self.images.image_size
        params = self.augment.forward_parameters(torch.Size((batch_size, 3, size, size)))
        flips = [param.data["batch_prob"] for param in params if "HorizontalFlip" in param.name]
        return (flips[0] > 0.5).to(self.device) if flips else None

    def embed(self, model: nn.Module, out: EmbeddingFile | None = None) -> torch.Tensor | None:
        """L2-normalised image embeddings of the un-augmented training images (what is clustered).

        Written into ``out`` chunk by chunk (each rank its shard), or returned gathered as ``(N, D)``.
        When the locked-feature cache serves ``model`` (:meth:`_embedding_suffix`) only the unlocked image
        groups and the projection run, on the cached prefix of each chunk: the same chunks (every row of a
        single process, cut by :func:`~mcl.data.images.embed_chunks`) the cache was computed on, so every
        row is bit for bit what the full forward gives (``tests/test_multimodal_cache.py``). Otherwise the
        whole image tower runs (every rank its shard).
        """
        model = unwrap_model(model)
        with evaluating(model):
            suffix = self._embedding_suffix(model)
            if suffix is None:
                return embed_images(model, self.images, model.encode_image, out)
            logger.info("multimodal: embedding the training set from the locked-feature cache (only the last %d "
                        "image groups run)", self.config.multimodal.unlocked_image_groups)
            features = self.locked_features
            assert features is not None and isinstance(model, PretrainedTowers)  # _embedding_suffix checked both

            def chunks(shard: np.ndarray) -> Iterator[torch.Tensor]:
                for rows in embed_chunks(shard):
                    activations = features.image[torch.as_tensor(rows, device=self.device)]
                    yield torch.nn.functional.normalize(model.image_projection(suffix(activations)).float(), dim=1)

            return embed_in_shards(chunks, self.num_samples, out)

    def _embedding_suffix(self, model: nn.Module) -> ImageFn | None:
        """``model``'s unlocked image suffix when the cache holds its locked outputs (built here if need be), else None.

        The conditions of training's :meth:`_cached_suffix` (no :attr:`cache_blocker`, a ``PretrainedTowers``,
        the cache's digest equal to that of ``model``'s locked weights, the same autocast), except that the
        locked layers need not be frozen: the pass runs in eval mode without gradients, so their function is
        fixed by their weights. The digest is computed afresh (well under a second): the model clustered may
        have been loaded with other weights since it was last hashed. A missing cache is built here when
        training would build the same one (``train.amp: off``): stage 0's pass then builds what stage 1 trains on.
        """
        if self.cache_blocker is not None or not isinstance(model, PretrainedTowers):
            return None
        digest = _locked_digest(model, self.config.multimodal.unlocked_image_groups)
        # Under train.amp, training caches under autocast: a cache built here would serve no step.
        build = self.config.train.amp == "off" and _autocast_dtype(self.device) is None
        return self._serving_suffix(model, digest, build)

    def training_state(self, model: nn.Module) -> None:
        """None: the CLIP loss keeps no state outside the model (the logit scale is a model parameter)."""
        return None


# ---------------------------------------------------------------------------------------------- integration


class MultistageTwoTower(TwoTowerModel):
    """The stages of a multimodal run as one two-tower model, integrated in both towers.

    ``encode_image`` / ``encode_text`` return the members' embeddings integrated with
    :func:`mcl.integration.integrate` (``normalized-concat``: each member's embedding L2-normalised
    then concatenated, so the cosine similarity of the result is the mean of the members' cosine
    similarities). Members share one tokenizer (they come from one run).

    Members are stage numbers: ``1..S`` the trained stages, ``0`` the initial model when given (and
    used by default only with ``include_stage0``). :meth:`select` returns a view on fewer members.

    Example:
        >>> model = mcl.load("runs/clip")                 # MultistageTwoTower of every finished stage
        >>> zeroshot_attributes(model, test_table)        # integrated model
        >>> zeroshot_attributes(model.select([1]), test_table)  # stage 1 alone
    """

    def __init__(self, stage_models: Sequence[TwoTowerModel], integration: str = "normalized-concat",
                 stage0: TwoTowerModel | None = None, include_stage0: bool = False) -> None:
        super().__init__()
        check_integration_mode(integration)
        if include_stage0 and stage0 is None:
            raise ValueError("include_stage0 needs a stage-0 model")
        self.stages = nn.ModuleList(stage_models)
        self.stage0 = stage0
        self.integration = integration
        self.members = ([0] if include_stage0 else []) + list(range(1, len(stage_models) + 1))
        if not self.members:
            raise ValueError("MultistageTwoTower needs at least one model")

    @property
    def num_stages(self) -> int:
        """How many trained stages this model holds (stage 0 not counted)."""
        return len(self.stages)

    def member(self, stage: int) -> TwoTowerModel:
        """The model of one stage (0: the initial model)."""
        if stage == 0 and self.stage0 is not None:
            return self.stage0
        if 1 <= stage <= self.num_stages:
            return self.stages[stage - 1]
        raise ValueError(f"no stage {stage}; this model has stages 1..{self.num_stages}"
                         f"{' and 0' if self.stage0 is not None else ''}")

    def select(self, stages: int | Sequence[int] | None = None) -> MultistageTwoTower:
        """A view (sharing weights) on some members.

        ``stages``: None = the current members, an int k = stages 1..k (plus stage 0 if this model
        includes it), or a list of stage numbers (0 = the initial model).
        """
        if stages is None:
            chosen = list(self.members)
        elif isinstance(stages, int):
            chosen = [s for s in self.members if s == 0] + list(range(1, stages + 1))
        else:
            chosen = list(stages)
        for stage in chosen:
            self.member(stage)  # validates
        if not chosen or (isinstance(stages, int) and stages < 1):
            raise ValueError(f"stages must select at least one of stages 1..{self.num_stages}, got {stages!r}")
        view = MultistageTwoTower(list(self.stages), self.integration, self.stage0)
        view.members = chosen
        return view

    def _models(self) -> list[TwoTowerModel]:
        return [self.member(s) for s in self.members]

    @property
    def embed_dim(self) -> int:  # type: ignore[override]
        """Size of the integrated embedding (sum over members)."""
        return sum(m.embed_dim for m in self._models())

    @property
    def logit_scale(self) -> torch.Tensor:
        """The first member's log inverse temperature (integration does not train a new one)."""
        return self._models()[0].logit_scale

    def compose(self, member_embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """The integrated embedding from the members' own ``(B, D_m)`` embeddings, in :attr:`members` order.

        What :meth:`encode_image` and :meth:`encode_text` return; lets callers that already hold the
        members' embeddings (``mcl eval``: :mod:`mcl.evaluation.member_embeddings`) skip encoding again.
        """
        return integrate(list(member_embeddings), self.integration)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> integrated ``(B, embed_dim)``."""
        return self.compose([m.encode_image(images) for m in self._models()])

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """Tokens of :meth:`tokenize` -> integrated ``(B, embed_dim)``."""
        return self.compose([m.encode_text(tokens) for m in self._models()])

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Tokens of the members' shared tokenizer."""
        return self._models()[0].tokenize(texts)

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, stages: int | Sequence[int] | None = None,
              batch_size: int = 512) -> np.ndarray:
        """Integrated, L2-normalised image embeddings of uint8 ``(N, H, W, 3)`` images (as ``mcl embed`` writes)."""
        return encode_images(self.select(stages), images, batch_size).numpy()
