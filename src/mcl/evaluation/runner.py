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

Data without attribute columns gets label-free rows instead (attribute ``views``, :func:`view_rows`):
two augmented views (the training augmentation, a fixed seed) of up to ``eval.view_images`` held-out
images, embedded by each representation: ``alignment`` and ``uniformity`` (Wang & Isola 2020; lower is
better for both), ``knn-agreement`` (the mean share of an image's 10 nearest held-out neighbours that
are the same in both views) and ``view-match@1`` (the share of images whose nearest neighbour among the
other view's embeddings is their own other view).
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
from mcl.diagnostics import alignment, uniformity
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
    """Linear and kNN probe rows of every representation on every attribute of ``test`` (else label-free rows)."""
    if not test.attribute_names():
        return view_rows(run, config, test, load_member)
    rows = []
    features = representations(run, config, train.images, test.images, load_member, untrained)
    for name, (train_x, test_x) in features.items():
        for attribute in test.attribute_names():
            y_train, y_test = train.attributes[attribute], test.attributes[attribute]
            linear = linear_probe(train_x, y_train, test_x, y_test, config.eval.linear_c, config.eval.linear_max_iter)
            knn = knn_probe(train_x, y_train, test_x, y_test, config.eval.knn_k)
            rows.append({"representation": name, "attribute": attribute, "probe": "linear", "accuracy": linear})
            rows.append({"representation": name, "attribute": attribute, "probe": "knn", "accuracy": knn})
        # Progress only: the values are printed once, in the tables (mcl.evaluation.tables).
        logger.info("%s: scored %d attribute(s)", name, len(test.attribute_names()))
    return rows


VIEW_NEIGHBOURS = 10


def two_views(config: Config, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views ``(n, 3, H, W)`` of uint8 images, with the training augmentation and a fixed seed."""
    from mcl.augment import build_augmentation, seeded_views

    augment = build_augmentation(config.augment, config.data.image_size, backend="kornia")
    return seeded_views(augment, torch.from_numpy(np.array(images, copy=True)), config.seed + 4242)


def knn_agreement(view_a: torch.Tensor, view_b: torch.Tensor, k: int = VIEW_NEIGHBOURS) -> tuple[float, float]:
    """(mean share of the k nearest neighbours shared by both views, share of rows whose other view is nearest)."""
    a, b = F.normalize(view_a.float(), dim=1), F.normalize(view_b.float(), dim=1)
    k = max(1, min(k, len(a) - 1))
    eye = torch.eye(len(a), dtype=torch.bool)
    near_a = (a @ a.T).masked_fill(eye, -2).topk(k, dim=1).indices
    near_b = (b @ b.T).masked_fill(eye, -2).topk(k, dim=1).indices
    shared = (near_a[:, :, None] == near_b[:, None, :]).any(2).float().mean()
    match = ((a @ b.T).argmax(1) == torch.arange(len(a))).float().mean()
    return float(shared), float(match)


def view_rows(run: RunDirectory, config: Config, test: ImageTable,
              load_member: Callable[[str], nn.Module]) -> list[dict[str, Any]]:
    """Label-free rows of every representation on two augmented views of held-out images (module docstring)."""
    count = min(config.eval.view_images, len(test))
    if count < 2:
        return []
    rows_index = np.random.default_rng(config.seed).choice(len(test), count, replace=False)
    view_a, view_b = two_views(config, test.images[np.sort(rows_index)])
    rows = []
    for name, (a, b) in representations(run, config, view_a, view_b, load_member).items():
        agreement, match = knn_agreement(a, b)
        values = {"alignment": alignment(a.numpy(), b.numpy()), "uniformity": uniformity(a.numpy()),
                  "knn-agreement": agreement, "view-match@1": match}
        rows += [{"representation": name, "attribute": "views", "probe": probe, "accuracy": value}
                 for probe, value in values.items()]
        logger.info("%s: scored the label-free measures", name)
    return rows
