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

Which members and representations a run holds is :class:`mcl.run.RunDirectory`'s business. Each
modality's entry lives beside its code: :mod:`mcl.modalities.images`, :mod:`mcl.modalities.image_text.modality`
(:class:`Modality` itself: :mod:`mcl.modalities.modality`).

Example:
    >>> modality = modality_of(config)        # IMAGES or IMAGE_TEXT
    >>> task = modality.task(config, table, device, run)
"""

from __future__ import annotations

from mcl.config import Config
from mcl.modalities.image_text.modality import IMAGE_TEXT
from mcl.modalities.images import IMAGES
from mcl.modalities.modality import LoadMember, Modality

MODALITIES = {modality.name: modality for modality in (IMAGES, IMAGE_TEXT)}


def modality_of(config: Config) -> Modality:
    """The run's modality: image-text when ``multimodal.enabled``, else images. The one place that decides."""
    return IMAGE_TEXT if config.multimodal.enabled else IMAGES


__all__ = ["IMAGES", "IMAGE_TEXT", "MODALITIES", "LoadMember", "Modality", "modality_of"]
