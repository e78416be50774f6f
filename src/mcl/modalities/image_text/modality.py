"""The image-text (CLIP) modality: :data:`IMAGE_TEXT`, the run's parts that are two-tower.

Its task is :class:`~mcl.modalities.image_text.task.ImageTextTask`, its stage 0 the task's initial
model (``multimodal.stage0``), its integrated model
:class:`~mcl.modalities.image_text.multistage.MultistageTwoTower`, its evaluation zero-shot, paired,
CLIP-blind, retrieval and linear probes (:func:`mcl.evaluation.multimodal_runner.evaluate_image_text`).
The heavy modules load on first use.

Example:
    >>> IMAGE_TEXT.task(config, table, device, run)          # an ImageTextTask
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.modalities.modality import LoadMember, Modality
from mcl.run import RunDirectory
from mcl.tasks import StageTask


def _image_text_task(config: Config, table: ImageTable, device: torch.device, run: RunDirectory) -> StageTask:
    from mcl.modalities.image_text.task import ImageTextTask

    return ImageTextTask(config, table, device, run)


def _two_tower(config: Config, run: RunDirectory) -> nn.Module:
    from mcl.modalities.image_text.towers import load_run_two_tower

    return load_run_two_tower(config, run.root)


def _integrate_two_tower(models: Sequence[nn.Module], config: Config, stage0: nn.Module | None) -> nn.Module:
    from mcl.modalities.image_text.multistage import MultistageTwoTower

    return MultistageTwoTower(list(models), config.mcl.integration, stage0,
                              config.multimodal.integrate_stage0 and stage0 is not None)


def _evaluate_image_text(run: RunDirectory, config: Config, train: ImageTable, test: ImageTable,
                         load_member: LoadMember) -> list[dict[str, Any]]:
    from mcl.evaluation.multimodal_runner import evaluate_image_text

    return evaluate_image_text(run, config, train, test, load_member)


def _format_image_text(result: dict[str, Any]) -> str:
    from mcl.evaluation.tables import format_tables

    return format_tables(result, ("zeroshot", "paired", "clip-blind", "linear"))


IMAGE_TEXT = Modality(
    name="multimodal",  # also eval.json's "kind" (as written before modalities existed)
    needs_attributes=False,
    task=_image_text_task,
    initial_model=lambda config, task: task.initial if config.multimodal.stage0 else None,
    untrained=_two_tower,
    integrate=_integrate_two_tower,
    evaluate=_evaluate_image_text,
    format_results=_format_image_text,
)
