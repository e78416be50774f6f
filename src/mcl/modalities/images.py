"""The images modality (two augmented views of one image): :data:`IMAGES`.

Its task is :class:`mcl.tasks.ImageContrastiveTask`, its integrated model
:class:`mcl.integration.MultistageEncoder`, its evaluation linear and k-NN probes
(:func:`mcl.evaluation.runner.evaluate_images`, with a randomly initialised encoder as the floor).

Example:
    >>> IMAGES.integrate(stage_encoders, config, None).embed(images)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.integration import MultistageEncoder
from mcl.modalities.modality import LoadMember, Modality
from mcl.run import RunDirectory
from mcl.tasks import StageTask, build_stage_encoder, stage_seed


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
