"""The stages of an image-text run as one two-tower model (:class:`MultistageTwoTower`).

Its ``encode_image`` and ``encode_text`` concatenate the per-stage embeddings
(:func:`mcl.integration.integrate`), so image-text similarity is the sum of the stages'
similarities and every evaluator of two-tower models (zero-shot, retrieval, MMVP) scores the
integrated model as is.

Example:
    >>> model = mcl.load("runs/clip")                 # MultistageTwoTower of every finished stage
    >>> model.select([1]).encode_image(images)        # stage 1 alone
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mcl.embedding import encode_images
from mcl.integration import check_integration_mode, integrate, select_stages
from mcl.models.two_tower import Tokens, TwoTowerModel


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

    @property
    def available(self) -> list[int]:
        """Every stage this model holds: ``1..num_stages``, and 0 when it has the initial model."""
        return ([0] if self.stage0 is not None else []) + list(range(1, self.num_stages + 1))

    def member(self, stage: int) -> TwoTowerModel:
        """The model of one stage (0: the initial model)."""
        select_stages([stage], self.available, self.members)  # validates
        return self.stage0 if stage == 0 else self.stages[stage - 1]

    def select(self, stages: int | Sequence[int] | None = None) -> MultistageTwoTower:
        """A view (sharing weights) on some members, chosen by :func:`mcl.integration.select_stages`.

        ``stages``: None = the current members, an int k = stages 1..k (plus stage 0 if this model
        includes it), or a list of stage numbers (0 = the initial model).
        """
        chosen = select_stages(stages, self.available, self.members)
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
