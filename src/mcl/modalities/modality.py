"""What a modality is: :class:`Modality`, the parts of a run that differ between images and image-text.

The instances live beside their code (:data:`mcl.modalities.images.IMAGES`,
:data:`mcl.modalities.image_text.modality.IMAGE_TEXT`); :func:`mcl.modalities.modality_of` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.run import RunDirectory
from mcl.tasks import StageTask

LoadMember = Callable[[str], nn.Module]


@dataclass(frozen=True)
class Modality:
    """The parts of a run that depend on its modality (see :mod:`mcl.modalities`)."""

    name: str
    needs_attributes: bool  # evaluation needs attribute columns (image-text runs fall back to retrieval)
    task: Callable[[Config, ImageTable, torch.device, RunDirectory], StageTask]
    initial_model: Callable[[Config, StageTask], nn.Module | None]
    untrained: Callable[[Config, RunDirectory], nn.Module]
    integrate: Callable[[Sequence[nn.Module], Config, nn.Module | None], nn.Module]
    evaluate: Callable[[RunDirectory, Config, ImageTable, ImageTable, LoadMember], list[dict[str, Any]]]
    format_results: Callable[[dict[str, Any]], str]
