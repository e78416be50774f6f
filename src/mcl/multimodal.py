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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.augment import build_augmentation, to_float_images
from mcl.config import Config, MultimodalConfig
from mcl.data.images import TrainingImages
from mcl.data.loader import Batch, BatchSampler, Loader
from mcl.data.table import ImageTable
from mcl.embedding import encode_images
from mcl.errors import ConfigError, DataError, RunDirError
from mcl.integration import check_integration_mode, integrate
from mcl.io import read_json, write_json
from mcl.models import unwrap_model
from mcl.models.text import WordTokenizer
from mcl.models.two_tower import Tokens, TwoTowerModel, build_two_tower_from_config, select_tokens, tokens_to
from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_
from mcl.run import TOKENIZER_FILE, RunDirectory
from mcl.tasks import embed_images, seeded_build, stage_seed

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


# ---------------------------------------------------------------------------------------------- the task


class ImageTextTask:
    """CLIP training on (image, caption) pairs with MCL's pseudo-label negatives.

    Images live on the device as uint8. Captions are tokenized once (fixed length); each batch
    encodes every *distinct* caption once and shares the embedding between the pairs that repeat it
    (synthetic captions repeat a lot: same result, a fraction of the text-tower cost).
    ``config.augment`` is applied to the images (keep colour jitter off when captions name
    colours). The initial model (:attr:`initial`, seeded with ``stage_seed(config, 0)``) is what
    ``multimodal.init: pretrained`` starts every stage from and what stage 0 clusters.
    """

    def __init__(self, config: Config, table: ImageTable, device: torch.device, run: RunDirectory) -> None:
        if table.captions is None:
            raise DataError(f"{table.root / 'labels.csv'}: no 'caption' column; multimodal training needs captions")
        self.config = config
        self.device = device
        self.num_samples = len(table)
        self.images = TrainingImages(table.images, device, config.data.workers, config.seed)
        self.tokenizer = run_tokenizer(config, table.captions, run)
        torch.manual_seed(stage_seed(config, 0))
        self.initial = build_two_tower_from_config(config.multimodal, self.tokenizer).to(device)
        # An aligned stage 0 (built and cached when missing); a run that recorded stage 0 reloads it from
        # its own stage-0/ (initial_stage), so resuming never depends on the cache.
        if config.multimodal.stage0_checkpoint and not run.has_stage0():
            from mcl.align import load_stage0_into

            load_stage0_into(self.initial, config.multimodal.stage0_checkpoint)
        distinct, caption_ids = np.unique(np.asarray(table.captions, dtype=str), return_inverse=True)
        self.caption_ids = torch.from_numpy(caption_ids.reshape(-1)).to(device)
        self.tokens = tokens_to(self.initial.tokenize([str(c) for c in distinct]), device)  # one row per caption
        self.augment = build_augmentation(config.augment, self.images.image_size).to(device)
        self.objective = CLIPLoss()

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
        images = self.augment(to_float_images(batch["image"]))
        captions, pair_caption = torch.unique(self.caption_ids[batch["index"]], return_inverse=True)
        image_emb, caption_emb = model(images, select_tokens(self.tokens, captions))
        # Identical captions are not negatives of each other (many repeat inside a pseudo-label group).
        same_caption = self.caption_ids[batch["index"]] if self.config.multimodal.mask_duplicate_captions else None
        return self.objective(image_emb, caption_emb[pair_caption], inner.logit_scale, pseudo_labels,
                              caption_ids=same_caption)

    def embed(self, model: nn.Module) -> torch.Tensor:
        """L2-normalised image embeddings of the un-augmented training images (what is clustered)."""
        model = unwrap_model(model)
        return embed_images(model, self.images, model.encode_image)

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

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> integrated ``(B, embed_dim)``."""
        return integrate([m.encode_image(images) for m in self._models()], self.integration)

    def encode_text(self, tokens: Tokens) -> torch.Tensor:
        """Tokens of :meth:`tokenize` -> integrated ``(B, embed_dim)``."""
        return integrate([m.encode_text(tokens) for m in self._models()], self.integration)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Tokens of the members' shared tokenizer."""
        return self._models()[0].tokenize(texts)

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, stages: int | Sequence[int] | None = None,
              batch_size: int = 512) -> np.ndarray:
        """Integrated, L2-normalised image embeddings of uint8 ``(N, H, W, 3)`` images (as ``mcl embed`` writes)."""
        return encode_images(self.select(stages), images, batch_size).numpy()
