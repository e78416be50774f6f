"""What one stage trains: where its batches come from, how a batch becomes a loss, how the set is embedded.

The stage loop (:mod:`mcl.stages`) is the same for every modality; a task supplies the parts that
differ. :class:`ImageContrastiveTask` is unimodal two-view training (SimCLR/DCL, or MoCo with a
momentum key encoder and a labelled queue); the multimodal CLIP task lives in :mod:`mcl.modalities.image_text.task`.
A batch is a dict (``{"index", "image", ...}``, see :mod:`mcl.data.loader`) built by the task's
:meth:`StageTask.loader` around the batch sampler the stage loop chose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.augment import build_augmentation, seeded_views, to_float_images
from mcl.config import Config, ObjectiveConfig
from mcl.data.images import DiskImages, TrainingImages
from mcl.data.loader import Batch, BatchSampler, Loader
from mcl.embedding_file import EmbeddingFile
from mcl.files import load_tensors, save_tensors
from mcl.models import ContrastiveEncoder, build_encoder, evaluating, unwrap_model
from mcl.objectives import MoCoLoss, MoCoState, MomentumEncoder, build_objective


def stage_seed(config: Config, stage: int) -> int:
    """Each stage (and each ensemble member, and stage 0) trains with its own seed."""
    return config.seed * 1000 + stage


@contextlib.contextmanager
def seeded_build(seed: int) -> Iterator[None]:
    """Build a stage's model inside: torch's RNG is seeded with ``seed`` first, so every rank builds the same
    weights; afterwards ranks > 0 re-seed it so that each rank draws its own augmentations (rank 0 keeps
    the single-process stream)."""
    torch.manual_seed(seed)
    yield
    if distributed.rank():
        torch.manual_seed(distributed.rank_seed(seed))


def build_stage_encoder(config: Config) -> ContrastiveEncoder:
    """An untrained encoder of the config's architecture (backbone + projection head), from torch's RNG."""
    model = config.model
    return build_encoder(model.backbone, model.width, model.projection_dim, model.hidden_dim, **model.backbone_args)


class StageTask(Protocol):
    """The modality-specific half of a stage."""

    num_samples: int
    device: torch.device

    def build_model(self, seed: int, previous: nn.Module | None) -> nn.Module:
        """A fresh (seeded) model for a stage, or one initialised from the previous stage's."""

    def loader(self, batch_sampler: BatchSampler) -> Loader:
        """The training batches, in the order ``batch_sampler`` draws them."""

    def loss(self, model: nn.Module, batch: Batch, pseudo_labels: torch.Tensor | None) -> torch.Tensor:
        """The contrastive loss of one batch (``model`` may be DDP-wrapped: call its ``forward``)."""

    def embed(self, model: nn.Module, out: EmbeddingFile | None = None) -> torch.Tensor | None:
        """L2-normalised features of every training sample (eval transform), for clustering.

        A collective: every rank embeds its contiguous shard of rows. With ``out`` (what the stage loop
        passes) each rank writes its rows into that on-disk map chunk by chunk and None is returned, so
        no rank ever holds ``(N, D)``; without it the shards are gathered as one ``(N, D)`` float32
        tensor on every rank (small sets, tests, benchmarks).
        """

    def training_state(self, model: nn.Module) -> nn.Module | None:
        """State the loss keeps besides ``model`` (checkpointed with it), set up for a new stage; or None."""

    def embed_views(self, model: nn.Module, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised features ``(len(rows), D)`` of two augmented views of training rows ``rows``: the same
        views for every model, so stages can be compared on them (:func:`embed_views`)."""


def embed_in_shards(embed_chunks: Callable[[np.ndarray], Iterator[torch.Tensor]], num_samples: int,
                    out: EmbeddingFile | None = None) -> torch.Tensor | None:
    """Each rank embeds a contiguous shard, ``embed_chunks(rows)`` yielding ``(B, D)`` blocks in row order.

    With ``out`` every rank writes its blocks into the file as they come (memory: one block) and None
    is returned; without it the shards are gathered in order on every rank as one ``(N, D)`` tensor.
    """
    shard = np.array_split(np.arange(num_samples), distributed.world_size())[distributed.rank()]
    if out is not None:
        out.write_shard(shard, embed_chunks(shard))
        return None
    return distributed.gather_no_grad(torch.cat(list(embed_chunks(shard))))


def embed_images(model: nn.Module, images: TrainingImages, encode: Callable[[torch.Tensor], torch.Tensor],
                 out: EmbeddingFile | None = None) -> torch.Tensor | None:
    """L2-normalised ``encode(float images)`` of every training image, ``model`` in eval mode (sharded over ranks).

    Written into ``out`` chunk by chunk, or returned as one gathered ``(N, D)`` float32 tensor (see
    :func:`embed_in_shards`). Rows are normalised per chunk: the same values as normalising them all at once.
    """

    def chunks(shard: np.ndarray) -> Iterator[torch.Tensor]:
        for batch in images.batches(shard):
            yield torch.nn.functional.normalize(encode(to_float_images(batch)).float(), dim=1)

    with evaluating(model):
        return embed_in_shards(chunks, images.num_samples, out)


VIEW_SEED_OFFSET = 104_729_000  # seeds of the diagnostics' views (stage seeds are seed * 1000 + stage)


def embed_views(model: nn.Module, images: TrainingImages, encode: Callable[[torch.Tensor], torch.Tensor],
                rows: np.ndarray, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised ``encode`` of two augmented views of the training images ``rows``, ``model`` in eval mode.

    The views are drawn on the CPU with kornia's code (every backend gives the same result), chunk ``i``
    seeded with ``config.seed`` and ``i``: the same views whichever stage, device or resume embeds them.
    Runs on the calling rank only (no collective).
    """
    augment = build_augmentation(config.augment, images.image_size, backend="kornia")
    out_a, out_b = [], []
    with evaluating(model), torch.no_grad():
        for i, batch in enumerate(images.batches(np.asarray(rows, dtype=np.int64))):
            # an offset no stage_seed reaches, so these draws never repeat a stage's
            view_a, view_b = seeded_views(augment, batch.cpu(), VIEW_SEED_OFFSET + config.seed * 1000 + i)
            for view, out in ((view_a, out_a), (view_b, out_b)):
                features = encode(view.to(images.device)).float()
                out.append(torch.nn.functional.normalize(features, dim=1).cpu().numpy())
    return np.concatenate(out_a), np.concatenate(out_b)


def objective_kwargs(config: ObjectiveConfig) -> dict[str, float | int]:
    """Constructor arguments of the configured objective."""
    kwargs: dict[str, float | int] = {"temperature": config.temperature}
    if config.name == "moco":
        kwargs["queue_size"] = config.queue_size
    return kwargs


class ImageContrastiveTask:
    """Two augmented views per image, an encoder, and a two-view objective (NT-Xent, DCL or MoCo).

    With ``objective.name: moco`` the keys come from a :class:`~mcl.objectives.MomentumEncoder`
    (EMA of the trained encoder, updated at the start of every loss, i.e. after every optimiser
    step) and the loss is symmetric: ``(L(q_a, k_b) + L(q_b, k_a)) / 2``. The keys of view b then
    enter the queue with their pseudo-labels and sample indices. A new stage's model is detected
    by the momentum encoder, which then restarts from it, and the queue is emptied.
    """

    def __init__(self, config: Config, images: np.ndarray | DiskImages, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.num_samples = len(images)
        self.images = TrainingImages(images, device, config.data.workers, config.seed,
                                     config.data.shard_order)
        self.augment = build_augmentation(config.augment, self.images.image_size).to(device)
        self.objective = build_objective(config.objective.name, **objective_kwargs(config.objective)).to(device)
        self.key_encoder = MomentumEncoder(config.objective.momentum) if isinstance(self.objective, MoCoLoss) else None

    def build_model(self, seed: int, previous: nn.Module | None = None) -> nn.Module:
        """Seeded fresh encoder; with ``mcl.init=previous`` it starts from the previous stage's weights.

        The weights are identical on every rank; afterwards ranks > 0 re-seed torch's global RNG so
        that each rank draws its own augmentations (rank 0 keeps the single-process stream).
        """
        with seeded_build(seed):
            model = build_stage_encoder(self.config)
            if previous is not None and self.config.mcl.init == "previous":
                model.load_state_dict(previous.state_dict())
            if self.config.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
        return model.to(self.device)

    def loader(self, batch_sampler: BatchSampler) -> Loader:
        """Batches ``{"index", "image"}`` of the training set (resident on the device, or streamed)."""
        return self.images.loader(batch_sampler)

    def views(self, batch: Batch) -> torch.Tensor:
        """Both augmented views of a batch, stacked: ``(2B, 3, H, W)``, view a first."""
        images = to_float_images(batch["image"])
        views = self.augment(torch.cat([images, images]))
        if self.config.train.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        return views

    def loss(self, model: nn.Module, batch: Batch, pseudo_labels: torch.Tensor | None) -> torch.Tensor:
        """Both views in one forward pass (shared BatchNorm statistics, half the kernel launches)."""
        views = self.views(batch)
        z_a, z_b = model(views).chunk(2)
        if self.key_encoder is None:
            return self.objective(z_a, z_b, pseudo_labels)
        return self._moco_loss(model, views, (z_a, z_b), pseudo_labels, batch["index"])

    def training_state(self, model: nn.Module) -> nn.Module | None:
        """MoCo: the key encoder (now a copy of ``model``) and an empty queue, to checkpoint; else None."""
        if self.key_encoder is None:
            return None
        assert isinstance(self.objective, MoCoLoss)
        self.key_encoder.follow(model)
        self.objective.reset()
        assert self.key_encoder.encoder is not None
        return MoCoState(self.key_encoder.encoder, self.objective)

    def _moco_loss(self, model: nn.Module, views: torch.Tensor, queries: tuple[torch.Tensor, torch.Tensor],
                   pseudo_labels: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
        """Symmetric MoCo loss against the momentum keys and the queue; then enqueue view b's keys."""
        assert self.key_encoder is not None and isinstance(self.objective, MoCoLoss)
        if self.key_encoder.follow(model):
            self.objective.reset()
        k_a, k_b = self.key_encoder(views).chunk(2)
        q_a, q_b = queries
        loss = 0.5 * (self.objective(q_a, k_b, pseudo_labels, index) + self.objective(q_b, k_a, pseudo_labels, index))
        self.objective.enqueue(k_b, pseudo_labels, index)
        return loss

    def embed(self, model: nn.Module, out: EmbeddingFile | None = None) -> torch.Tensor | None:
        """Backbone features of the un-augmented training images, L2-normalised (into ``out``, or returned)."""
        return embed_images(model, self.images, model.features, out)

    def embed_views(self, model: nn.Module, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two augmented views of training rows ``rows`` through the encoder's features (:func:`embed_views`)."""
        return embed_views(model, self.images, unwrap_model(model).features, rows, self.config)


def save_model(model: nn.Module, path, metadata: dict[str, str] | None = None) -> None:
    """Final weights of a stage as safetensors (unwraps DDP/compile)."""
    save_tensors(path, unwrap_model(model).state_dict(), metadata)


def load_model_weights(model: nn.Module, path) -> nn.Module:
    """Load safetensors weights into ``model`` (strict)."""
    model.load_state_dict(load_tensors(path))
    return model
