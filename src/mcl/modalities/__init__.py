"""Modalities: what differs between unimodal (two image views) and image-text (CLIP) MCL, in one place.

:func:`modality_of` is the only code that reads ``multimodal.enabled``; everything else (the API,
the CLI, evaluation, the report) asks the run's :class:`Modality`:

- ``task(config, table, device, run)``: the :class:`~mcl.tasks.StageTask` one stage trains (its
  loader, loss and embedding of the training set);
- ``initial_model(task)``: the model stage 0 clusters before stage 1 (None: no stage 0);
- ``untrained(config, run)``: a model of the run's architecture, ready for ``load_state_dict``;
- ``integrate(models, config, stage0)``: the stages as one model (:class:`MultistageEncoder` or
  :class:`MultistageTwoTower`, both with ``embed(images, stages=)``);
- ``evaluate(run, config, train, test, load_member)``: the rows of ``eval.json``;
- ``format_results(result)``: those rows as text tables; ``name``: also which report sections apply.

Which members and representations a run holds is :class:`mcl.run.RunDirectory`'s business.

Example:
    >>> modality = modality_of(config)        # IMAGES or IMAGE_TEXT
    >>> task = modality.task(config, table, device, run)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.integration import MultistageEncoder
from mcl.run import RunDirectory
from mcl.tasks import StageTask, build_stage_encoder, stage_seed

LoadMember = Callable[[str], nn.Module]


@dataclass(frozen=True)
class Modality:
    """The parts of a run that depend on its modality (see the module docstring)."""

    name: str
    needs_attributes: bool  # evaluation needs attribute columns (image-text runs fall back to retrieval)
    task: Callable[[Config, ImageTable, torch.device, RunDirectory], StageTask]
    initial_model: Callable[[Config, StageTask], nn.Module | None]
    untrained: Callable[[Config, RunDirectory], nn.Module]
    integrate: Callable[[Sequence[nn.Module], Config, nn.Module | None], nn.Module]
    evaluate: Callable[[RunDirectory, Config, ImageTable, ImageTable, LoadMember], list[dict[str, Any]]]
    format_results: Callable[[dict[str, Any]], str]


# ---------------------------------------------------------------------------------------- images (two views)


def _image_task(config: Config, table: ImageTable, device: torch.device, run: RunDirectory) -> StageTask:
    from mcl.tasks import ImageContrastiveTask

    return ImageContrastiveTask(config, table.images, device)


def _evaluate_images(run: RunDirectory, config: Config, train: ImageTable, test: ImageTable,
                     load_member: LoadMember) -> list[dict[str, Any]]:
    from mcl.evaluation.runner import evaluate_images

    def random_init() -> nn.Module:
        torch.manual_seed(stage_seed(config, 999))
        return build_stage_encoder(config).eval()

    return evaluate_images(run, config, train, test, load_member, random_init)


def _format_images(result: dict[str, Any]) -> str:
    from mcl.evaluation.tables import format_tables

    return format_tables(result, ("linear", "knn"))


IMAGES = Modality(
    name="images",
    needs_attributes=False,  # without attribute columns: label-free rows (mcl.evaluation.runner.view_rows)
    task=_image_task,
    initial_model=lambda config, task: None,
    untrained=lambda config, run: build_stage_encoder(config),
    integrate=lambda models, config, stage0: MultistageEncoder(list(models), config.mcl.integration),
    evaluate=_evaluate_images,
    format_results=_format_images,
)


# ---------------------------------------------------------------------------------------- image-text (CLIP)


def _image_text_task(config: Config, table: ImageTable, device: torch.device, run: RunDirectory) -> StageTask:
    from mcl.modalities.image_text.task import ImageTextTask

    return ImageTextTask(config, table, device, run)


def _two_tower(config: Config, run: RunDirectory) -> nn.Module:
    from mcl.modalities.image_text.task import load_run_two_tower

    return load_run_two_tower(config, run.root)


def _integrate_two_tower(models: Sequence[nn.Module], config: Config, stage0: nn.Module | None) -> nn.Module:
    from mcl.modalities.image_text.task import MultistageTwoTower

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

MODALITIES = {modality.name: modality for modality in (IMAGES, IMAGE_TEXT)}


def modality_of(config: Config) -> Modality:
    """The run's modality: image-text when ``multimodal.enabled``, else images. The one place that decides."""
    return IMAGE_TEXT if config.multimodal.enabled else IMAGES
