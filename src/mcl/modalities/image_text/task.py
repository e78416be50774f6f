"""Image-text (CLIP-style) MCL on the same stage loop as the unimodal case: :class:`ImageTextTask`.

Every stage trains a two-tower model (:mod:`mcl.models.two_tower`) with
:class:`~mcl.objectives.clip.CLIPLoss`, whose negatives are restricted to the pseudo-label groups;
the stage's clusters come from its L2-normalised *image* embeddings of the training set.
:func:`mcl.stages.run_stages` is used unchanged, plus an optional stage 0 (``multimodal.stage0``): the
initial (e.g. pretrained or aligned, :mod:`mcl.modalities.image_text.align`) model's clusters, so that
stage 1 already trains with feature-aware negatives.

Run directory additions: ``tokenizer.json`` (``small`` models, :mod:`~mcl.modalities.image_text.towers`)
and ``stage-0/`` (weights and clusters of the initial model). With the fine-tuning recipe's locking
(``configs/multimodal.yaml``) steps and the embedding pass run on the locked layers' cached outputs
(:mod:`~mcl.modalities.image_text.cache`); otherwise both towers run every step and the reason is logged.

Example:
    >>> task = ImageTextTask(config, table, torch.device("cpu"), run)
    >>> model = task.build_model(seed=1)
    >>> loss = task.loss(model, batch, pseudo_labels)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mcl.augment import build_augmentation, to_float_images
from mcl.config import Config
from mcl.data.images import TrainingImages, embed_chunks
from mcl.data.loader import Batch, BatchSampler, Loader
from mcl.data.table import ImageTable
from mcl.embedding_file import EmbeddingFile
from mcl.errors import DataError
from mcl.logging_utils import logger
from mcl.modalities.image_text.cache import LockedFeatureCache
from mcl.modalities.image_text.towers import lock_towers, run_tokenizer
from mcl.models import evaluating, unwrap_model
from mcl.models.two_tower import TwoTowerModel, build_two_tower_from_config, select_tokens, tokens_to
from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_
from mcl.run import RunDirectory
from mcl.tasks import embed_images, embed_in_shards, embed_views, seeded_build, stage_seed


class ImageTextTask:
    """CLIP training on (image, caption) pairs with MCL's pseudo-label negatives.

    Images live on the device as uint8. Captions are tokenized once (fixed length); each batch
    encodes every *distinct* caption once and shares the embedding between the pairs that repeat it
    (synthetic captions repeat a lot: same result, a fraction of the text-tower cost).
    ``config.augment`` is applied to the images (keep colour jitter off when captions name
    colours). The initial model (:attr:`initial`, seeded with ``stage_seed(config, 0)``) is what
    ``multimodal.init: pretrained`` starts every stage from and what stage 0 clusters. When the towers
    are locked as the fine-tuning recipe locks them, steps train on the locked layers' cached outputs
    (:attr:`cache`, ``multimodal.cache_locked_features``; :mod:`~mcl.modalities.image_text.cache`).
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
            from mcl.modalities.image_text.align.checkpoint import load_stage0_into

            load_stage0_into(self.initial, config.multimodal.stage0_checkpoint)
        distinct, caption_ids = np.unique(np.asarray(table.captions, dtype=str), return_inverse=True)
        self.caption_ids = torch.from_numpy(caption_ids.reshape(-1)).to(device)
        self.num_captions = len(distinct)
        self.tokens = tokens_to(self.initial.tokenize([str(c) for c in distinct]), device)  # one row per caption
        self.augment = build_augmentation(config.augment, self.images.image_size).to(device)
        self.objective = CLIPLoss()
        # Built on the first step (or stage 0's embedding pass), shared by every stage.
        self.cache = LockedFeatureCache(config, self.images, self.tokens, self.num_captions, device)

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
        served = self.cache.serve(inner, training=True)
        if served is None:
            images = self.augment(to_float_images(batch["image"]))
            image_emb, caption_emb = model(images, select_tokens(self.tokens, captions))
        else:
            flips = self._draw_flips(len(batch["index"]))  # drawn as the augmentation would: the same RNG stream
            image_emb, caption_emb = served.pair_embeddings(batch["index"], captions, flips)
        # Identical captions are not negatives of each other (many repeat inside a pseudo-label group).
        same_caption = pair_ids if self.config.multimodal.mask_duplicate_captions else None
        return self.objective(image_emb, caption_emb[pair_caption], inner.logit_scale, pseudo_labels,
                              caption_ids=same_caption)

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
        When the locked-feature cache serves ``model`` only the unlocked image groups and the projection
        run, on the cached prefix of each chunk: the chunks the cache was computed on, so every row is bit
        for bit what the full forward gives. Otherwise the whole image tower runs (every rank its shard).
        """
        model = unwrap_model(model)
        with evaluating(model):
            served = self.cache.serve(model, training=False)
            if served is None:
                return embed_images(model, self.images, model.encode_image, out)
            logger.info("multimodal: embedding the training set from the locked-feature cache (only the last %d "
                        "image groups run)", self.config.multimodal.unlocked_image_groups)
            return embed_in_shards(lambda shard: map(served.image_embeddings, embed_chunks(shard)),
                                   self.num_samples, out)

    def embed_views(self, model: nn.Module, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two augmented views of training rows ``rows`` through the whole image tower (:func:`embed_views`)."""
        return embed_views(model, self.images, unwrap_model(model).encode_image, rows, self.config)

    def training_state(self, model: nn.Module) -> None:
        """None: the CLIP loss keeps no state outside the model (the logit scale is a model parameter)."""
        return None


