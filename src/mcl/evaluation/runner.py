"""Evaluation of image (unimodal) runs: per-attribute probes of each stage, of MCL, and of the references.

:func:`evaluate_images` scores the representations a run holds (listed by
:meth:`mcl.run.RunDirectory.representations`), loading models through the function it is given;
``mcl eval`` reaches it through the run's modality (:mod:`mcl.modalities`).

Representations (rows of ``eval.json``):

- ``stage-s``: stage s's backbone features alone;
- ``mcl-k``: stages 1..k integrated (``mcl.integration``);
- ``ensemble-k``: k independently seeded single-stage models integrated the same way (stage 1 +
  ``ensemble-2..k``): same feature size and training compute as ``mcl-k``, so a gain of MCL over it
  is not just extra capacity;
- ``random-init``: an untrained encoder of the same architecture;
- ``pixels``: raw pixels (downsampled to at most 32 px).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.evaluation.probes import knn_probe, linear_probe
from mcl.integration import MultistageEncoder, integrate
from mcl.run import RunDirectory

logger = logging.getLogger("mcl")

Features = tuple[torch.Tensor, torch.Tensor]  # (train rows, test rows)


def _raw_features(model: nn.Module, train_images: np.ndarray, test_images: np.ndarray) -> Features:
    """One model's raw (un-normalised) backbone features: what :func:`integrate` combines across stages."""
    encoder = MultistageEncoder([model])
    return (torch.from_numpy(encoder.embed_stages(train_images)[0]),
            torch.from_numpy(encoder.embed_stages(test_images)[0]))


def _pixels(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255
    if tensor.shape[-1] > 32:
        tensor = F.interpolate(tensor, size=(32, 32), mode="area")
    return tensor.flatten(1)


def _integrated(raw_parts: list[Features], mode: str) -> Features:
    """Integrate raw per-model features exactly as :class:`MultistageEncoder` does (one part: normalised)."""
    return integrate([p[0] for p in raw_parts], mode), integrate([p[1] for p in raw_parts], mode)


def representations(run: RunDirectory, config: Config, train_images: np.ndarray, test_images: np.ndarray,
                    load_member: Callable[[str], nn.Module],
                    untrained: Callable[[], nn.Module] | None = None) -> dict[str, Features]:
    """Every representation to probe, as (train, test) feature matrices.

    ``load_member("stage-2")`` gives a trained member; ``untrained()`` the ``random-init`` reference
    (with ``eval.references``, which also adds raw ``pixels``).
    """
    raw: dict[str, Features] = {}  # each member embedded once, integrated afterwards like MultistageEncoder:
    # with concat-then-normalize the stages' relative norms matter, so mcl-k is not built from normalised parts.
    out: dict[str, Features] = {}
    for representation in run.representations(config):
        for member in representation.members:
            if member not in raw:
                raw[member] = _raw_features(load_member(member), train_images, test_images)
        out[representation.name] = _integrated([raw[m] for m in representation.members], config.mcl.integration)
    if config.eval.references and untrained is not None:
        out["random-init"] = _integrated([_raw_features(untrained(), train_images, test_images)],
                                         config.mcl.integration)
        out["pixels"] = (_pixels(train_images), _pixels(test_images))
    return out


def evaluate_images(run: RunDirectory, config: Config, train: ImageTable, test: ImageTable,
                    load_member: Callable[[str], nn.Module],
                    untrained: Callable[[], nn.Module] | None = None) -> list[dict[str, Any]]:
    """Linear and kNN probe rows of every representation on every attribute of ``test``."""
    rows = []
    features = representations(run, config, train.images, test.images, load_member, untrained)
    for name, (train_x, test_x) in features.items():
        for attribute in test.attribute_names():
            y_train, y_test = train.attributes[attribute], test.attributes[attribute]
            linear = linear_probe(train_x, y_train, test_x, y_test, config.eval.linear_c, config.eval.linear_max_iter)
            knn = knn_probe(train_x, y_train, test_x, y_test, config.eval.knn_k)
            rows.append({"representation": name, "attribute": attribute, "probe": "linear", "accuracy": linear})
            rows.append({"representation": name, "attribute": attribute, "probe": "knn", "accuracy": knn})
            logger.info("%s %s linear=%.3f knn=%.3f", name, attribute, linear, knn)
    return rows
