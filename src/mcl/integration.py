"""Cross-stage representation integration: the features of all stages, concatenated.

Each stage's encoder learned a different feature (the ones earlier stages suppressed); the final
representation keeps all of them side by side. ``normalized-concat`` L2-normalises each stage's
backbone features before concatenating (each stage weighs the same); ``concat-then-normalize``
concatenates raw features and normalises the result.

Both integrated models (:class:`MultistageEncoder` here, :class:`~mcl.modalities.image_text.multistage.
MultistageTwoTower` for image-text runs) choose their members with one rule, :func:`select_stages`.

Example:
    >>> integrate([stage1_features, stage2_features])          # (B, F_1 + F_2), each part unit-norm
    >>> select_stages(2, available=[1, 2, 3], default=[1, 2, 3])   # [1, 2]: "mcl-2"
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcl.embedding import images_to_tensor
from mcl.models import evaluating

INTEGRATION_MODES = ("normalized-concat", "concat-then-normalize")


def check_integration_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`INTEGRATION_MODES`."""
    if mode not in INTEGRATION_MODES:
        raise ValueError(f"unknown integration mode {mode!r}; expected one of {INTEGRATION_MODES}")


def select_stages(stages: int | Sequence[int] | None, available: Sequence[int], default: Sequence[int]) -> list[int]:
    """The stage numbers a ``stages`` argument chooses, the one rule of every integrated model.

    ``stages``: None = ``default`` (the model's current members); an int ``k >= 1`` = stages ``1..k``,
    plus stage 0 (the initial model) when ``default`` has it; a sequence = those stage numbers, in
    that order. Every chosen stage must be in ``available``; at least one is chosen.
    ``ValueError`` otherwise, naming the stages the model has.
    """
    trained = [s for s in available if s != 0]
    has = f"{trained[0]}..{trained[-1]}" if trained else "none"
    has += " and 0" if 0 in available else ""
    if stages is None:
        chosen = list(default)
    elif isinstance(stages, int):
        chosen = [s for s in default if s == 0] + list(range(1, stages + 1)) if stages >= 1 else []
    else:
        chosen = list(stages)
    if not chosen:
        raise ValueError(f"stages must select at least one of stages {has}, got {stages!r}")
    for stage in chosen:
        if stage not in available:
            raise ValueError(f"no stage {stage}; this model has stages {has}")
    return chosen


def integrate(stage_features: Sequence[torch.Tensor], mode: str = "normalized-concat") -> torch.Tensor:
    """Combine per-stage ``(B, F_s)`` features into one ``(B, sum F_s)`` representation."""
    check_integration_mode(mode)
    if mode == "normalized-concat":
        return torch.cat([F.normalize(f.float(), dim=1, eps=1e-8) for f in stage_features], dim=1)
    return F.normalize(torch.cat([f.float() for f in stage_features], dim=1), dim=1, eps=1e-8)


class MultistageEncoder(nn.Module):
    """The trained MCL model: one encoder per stage, features integrated across stages.

    Any per-stage module works as long as it has ``features(images) -> (B, F)`` (e.g.
    :class:`mcl.models.ContrastiveEncoder`) or maps images to features in ``forward``.

    Example:
        >>> encoder = mcl.load("runs/demo")
        >>> features = encoder.embed(images)             # all stages
        >>> first_two = encoder.embed(images, stages=2)  # stages 1..2 ("mcl-2")
    """

    def __init__(self, stage_encoders: Sequence[nn.Module], integration: str = "normalized-concat") -> None:
        super().__init__()
        check_integration_mode(integration)
        self.stages = nn.ModuleList(stage_encoders)
        self.integration = integration

    @property
    def num_stages(self) -> int:
        """How many stages this encoder holds."""
        return len(self.stages)

    @staticmethod
    def _stage_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder.features(images) if hasattr(encoder, "features") else encoder(images)

    def forward(self, images: torch.Tensor, stages: int | Sequence[int] | None = None) -> torch.Tensor:
        """Integrated features of float images ``(B, 3, H, W)`` in [0, 1].

        ``stages``: None = all, an int k = the first k stages, or a list of 1-based stage numbers.
        """
        chosen = self._select(stages)
        return integrate([self._stage_features(self.stages[s - 1], images) for s in chosen], self.integration)

    def _select(self, stages: int | Sequence[int] | None) -> list[int]:
        every = range(1, self.num_stages + 1)
        return select_stages(stages, every, every)

    def embed(self, images: np.ndarray | torch.Tensor, stages: int | Sequence[int] | None = None,
              batch_size: int = 512) -> np.ndarray:
        """Integrated features of a whole image array, in eval mode.

        ``images``: uint8 ``(N, H, W, 3)`` (as stored in an image table) or float ``(N, 3, H, W)``
        in [0, 1]. Returns float32 ``(N, D)``.
        """
        with evaluating(self):
            outputs = [self(batch, stages).cpu() for batch in self._batches(images, batch_size)]
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)

    def embed_stages(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> list[np.ndarray]:
        """Every stage's raw (un-normalised) backbone features of a whole image array, in eval mode.

        What :func:`integrate` combines: ``integrate(embed_stages(x)[:k], mode)`` equals
        ``embed(x, stages=k)``. One pass over the images for all stages.
        """
        with evaluating(self):
            outputs = [[self._stage_features(encoder, batch).float().cpu() for encoder in self.stages]
                       for batch in self._batches(images, batch_size)]
        if not outputs:
            return [np.zeros((0, 0), dtype=np.float32) for _ in self.stages]
        return [torch.cat(parts).numpy() for parts in zip(*outputs, strict=True)]

    def _batches(self, images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        device = next(self.parameters()).device
        for start in range(0, len(images), batch_size):
            yield images_to_tensor(images[start : start + batch_size]).to(device, non_blocking=True)
