"""``mcl eval`` for multimodal runs: zero-shot, paired benchmark, retrieval and a linear probe per representation.

Representations (as in :mod:`mcl.evaluation.runner`): ``stage-0`` (the initial model, when the run
clustered one), ``stage-s`` alone, ``mcl-k`` (stages 1..k integrated in both towers, with stage 0 too
when ``multimodal.integrate_stage0``), and ``ensemble-k`` (stage 1 + independently seeded
single-stage models, the same size and compute as ``mcl-k``).

Rows of ``eval.json`` keep the unimodal schema ``{representation, attribute, probe, accuracy}``:

- ``zeroshot``: zero-shot accuracy of an attribute on the test split (ensembled prompts);
- ``paired``: MMVP-style score of an attribute: test image pairs that differ only in it, each pair
  solved when both full captions prefer their own image;
- ``linear``: linear probe of an attribute on the integrated *image* embeddings (did the image tower
  learn the feature at all, whether or not the text side can name it);
- ``retrieval-i2t@k`` / ``retrieval-t2i@k`` (attribute ``caption``): recall@k between the test
  images and their captions.

Image-text data without attributes (img2dataset, WebDataset) gets the retrieval rows only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.errors import DataError
from mcl.evaluation.clip_blind import mine_clip_blind_pairs, score_clip_blind
from mcl.evaluation.mmvp import PairedBenchmark, build_paired_benchmark, score_embedded_pairs
from mcl.evaluation.probes import linear_probe
from mcl.evaluation.zeroshot import retrieval_recall, zeroshot_attributes
from mcl.multimodal import MultistageTwoTower, encode_images
from mcl.run import RunDirectory

logger = logging.getLogger("mcl")

RETRIEVAL_PROBES = {"image_to_text": "retrieval-i2t", "text_to_image": "retrieval-t2i"}


def two_tower_representations(run: RunDirectory, config: Config,
                              load_member: Callable[[str], MultistageTwoTower]) -> dict[str, MultistageTwoTower]:
    """Every representation of a multimodal run (:meth:`RunDirectory.representations`) as a two-tower model."""
    include_stage0 = config.multimodal.integrate_stage0
    loaded: dict[str, MultistageTwoTower] = {}
    out = {}
    for representation in run.representations(config, include_stage0=include_stage0):
        for member in representation.members:
            if member not in loaded:
                loaded[member] = load_member(member)
        # Single members too are wrapped: the integrated view is what mcl.load gives and what was always scored.
        out[representation.name] = MultistageTwoTower([loaded[m] for m in representation.members],
                                                      config.mcl.integration)
    if not out:
        raise DataError(f"{run.root}: no finished stage to evaluate; run 'mcl train' first")
    return out


def row(name: str, attribute: str, probe: str, accuracy: float) -> dict[str, Any]:
    """One ``eval.json`` row."""
    return {"representation": name, "attribute": attribute, "probe": probe, "accuracy": float(accuracy)}


def paired_benchmarks(test: ImageTable, config: Config) -> dict[str, PairedBenchmark]:
    """The paired benchmark of each attribute of ``test``; attributes without any differing pair are left out."""
    benchmarks = {}
    for attribute in test.attribute_names():
        try:
            benchmarks[attribute] = build_paired_benchmark(test, attribute, config.eval.paired_pairs, config.seed)
        except DataError as exc:
            logger.info("paired benchmark: %s", exc)
    return benchmarks


def score_representation(name: str, model: MultistageTwoTower, train: ImageTable, test: ImageTable,
                         config: Config, benchmarks: dict[str, PairedBenchmark] | None = None
                         ) -> list[dict[str, Any]]:
    """All rows of one representation. ``benchmarks``: :func:`paired_benchmarks` of ``test`` (built if None).

    The test images are embedded once and reused by every probe (paired-benchmark images are test rows).
    """
    if not test.attribute_names() and test.captions is None:
        return []
    rows = []
    test_x = encode_images(model, test.images)
    if test.attribute_names():
        zeroshot = zeroshot_attributes(model, test, image_embeddings=test_x)
        rows += [row(name, a, "zeroshot", v) for a, v in zeroshot.items()]
        for a, benchmark in (paired_benchmarks(test, config) if benchmarks is None else benchmarks).items():
            solved = score_embedded_pairs(model, test_x[torch.as_tensor(benchmark.rows)], benchmark.statements)
            rows.append(row(name, a, "paired", solved.float().mean()))
        train_x = encode_images(model, train.images)
        rows += [row(name, a, "linear", linear_probe(train_x, train.attributes[a], test_x, test.attributes[a],
                                                     config.eval.linear_c, config.eval.linear_max_iter))
                 for a in test.attribute_names()]
    if test.captions is not None:
        for key, value in retrieval_recall(model, test.images, test.captions, image_embeddings=test_x).items():
            direction, k = key.split("_R@")
            rows.append(row(name, "caption", f"{RETRIEVAL_PROBES[direction]}@{k}", value))
    return rows


def clip_blind_pairs(representations: dict[str, MultistageTwoTower], test: ImageTable,
                     config: Config) -> dict:
    """CLIP-blind test pairs per attribute: most alike for the initial model (stage 0, else 1), one attribute apart."""
    reference = representations.get("stage-0") or representations.get("stage-1")
    if not config.eval.clip_blind_pairs or reference is None or not test.attribute_names():
        return {}
    return mine_clip_blind_pairs(encode_images(reference, test.images), test, config.eval.clip_blind_pairs)


def evaluate_image_text(run: RunDirectory, config: Config, train: ImageTable, test: ImageTable,
                        load_member: Callable[[str], MultistageTwoTower]) -> list[dict[str, Any]]:
    """Every row (zero-shot, paired, linear, retrieval) of every representation of a multimodal run."""
    benchmarks = paired_benchmarks(test, config) if test.attribute_names() else {}
    representations = two_tower_representations(run, config, load_member)
    blind = clip_blind_pairs(representations, test, config)
    rows = []
    for name, model in representations.items():
        model_rows = score_representation(name, model, train, test, config, benchmarks)
        model_rows += [row(name, a, "clip-blind", v) for a, v in score_clip_blind(model, test, blind).items()
                       if v == v]  # NaN: no such pair
        logger.info("%s: %s", name, ", ".join(f"{r['probe']}[{r['attribute']}]={r['accuracy']:.3f}"
                                               for r in model_rows))
        rows += model_rows
    return rows
