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

Every member (stage checkpoint) encodes the train and test images and each text list once for all
representations (:mod:`mcl.evaluation.member_embeddings`); ``mcl-k`` is composed from its members'
embeddings as :class:`~mcl.modalities.image_text.task.MultistageTwoTower` composes them: the same numbers as encoding
each representation's model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mcl.config import Config
from mcl.data.captions import ZEROSHOT_TEMPLATES
from mcl.data.table import ImageTable
from mcl.embedding import Embedder, ModelEmbedder
from mcl.errors import DataError
from mcl.evaluation.clip_blind import mine_clip_blind_pairs, score_clip_blind
from mcl.evaluation.member_embeddings import MemberEmbeddings, RepresentationEmbedder
from mcl.evaluation.mmvp import PairedBenchmark, build_paired_benchmark, score_embedded_pairs
from mcl.evaluation.probes import linear_probe
from mcl.evaluation.zeroshot import retrieval_recall, zeroshot_attributes
from mcl.modalities.image_text.multistage import MultistageTwoTower
from mcl.run import RunDirectory

logger = logging.getLogger("mcl")

RETRIEVAL_PROBES = {"image_to_text": "retrieval-i2t", "text_to_image": "retrieval-t2i"}


def two_tower_representations(run: RunDirectory, config: Config,
                              load_member: Callable[[str], MultistageTwoTower]) -> dict[str, MultistageTwoTower]:
    """Every representation of a multimodal run (:meth:`RunDirectory.representations`) as a two-tower model."""
    return {name: model for name, (model, _) in _representations(run, config, load_member)[1].items()}


def representation_embedders(run: RunDirectory, config: Config, load_member: Callable[[str], MultistageTwoTower],
                             batch_size: int = 256) -> dict[str, tuple[MultistageTwoTower, RepresentationEmbedder]]:
    """Every representation as (two-tower model, embedder): the embedders share one :class:`MemberEmbeddings`.

    Each member is loaded once and encodes each image set and text list once, whichever representations
    hold it. ``batch_size``: that of the evaluators the embeddings stand in for (the numbers depend on it).
    """
    members, representations = _representations(run, config, load_member)
    mm = config.multimodal
    store = MemberEmbeddings(members, mm.unlocked_image_groups if mm.lock_image else None, batch_size)
    logger.info("evaluation: %d members, %d distinct image prefix(es) and %d text tower(s) run per batch",
                len(members), store.shared_image_groups, store.shared_text_groups)
    return {name: (model, RepresentationEmbedder(store, model, names))
            for name, (model, names) in representations.items()}


def _representations(run: RunDirectory, config: Config, load_member: Callable[[str], MultistageTwoTower]
                     ) -> tuple[dict[str, MultistageTwoTower], dict[str, tuple[MultistageTwoTower, tuple[str, ...]]]]:
    """(member name -> loaded model, representation name -> (two-tower model, its member names))."""
    include_stage0 = config.multimodal.integrate_stage0
    loaded: dict[str, MultistageTwoTower] = {}
    out = {}
    for representation in run.representations(config, include_stage0=include_stage0):
        for member in representation.members:
            if member not in loaded:
                loaded[member] = load_member(member)
        # Single members too are wrapped: the integrated view is what mcl.load gives and what was always scored.
        out[representation.name] = (MultistageTwoTower([loaded[m] for m in representation.members],
                                                       config.mcl.integration), tuple(representation.members))
    if not out:
        raise DataError(f"{run.root}: no finished stage to evaluate; run 'mcl train' first")
    return loaded, out


def row(name: str, attribute: str, probe: str, accuracy: float) -> dict[str, Any]:
    """One ``eval.json`` row."""
    return {"representation": name, "attribute": attribute, "probe": probe, "accuracy": float(accuracy)}


def paired_benchmarks(test: ImageTable, config: Config) -> dict[str, PairedBenchmark]:
    """The paired benchmark of each attribute of ``test``; attributes without any differing pair are left out.

    ``eval.paired_pairs: 0`` turns it off (no benchmark, no ``paired`` rows)."""
    benchmarks = {}
    if not config.eval.paired_pairs:  # 0: the paired benchmark is off
        return benchmarks
    for attribute in test.attribute_names():
        try:
            benchmarks[attribute] = build_paired_benchmark(test, attribute, config.eval.paired_pairs, config.seed)
        except DataError as exc:
            logger.info("paired benchmark: %s", exc)
    return benchmarks


def score_representation(name: str, model: MultistageTwoTower, train: ImageTable, test: ImageTable,
                         config: Config, benchmarks: dict[str, PairedBenchmark] | None = None,
                         embedder: Embedder | None = None) -> list[dict[str, Any]]:
    """All rows of one representation. ``benchmarks``: :func:`paired_benchmarks` of ``test`` (built if None).

    The test images are embedded once and reused by every probe (paired-benchmark images are test rows).
    ``embedder``: the representation's embeddings (:func:`representation_embedders`: members' reused);
    None encodes with ``model``.
    """
    if not test.attribute_names() and test.captions is None:
        return []
    embedder = embedder or ModelEmbedder(model)
    rows = []
    test_x = embedder.images(test.images)
    if test.attribute_names():
        zeroshot = zeroshot_attributes(model, test, image_embeddings=test_x, embedder=embedder,
                                       templates={**ZEROSHOT_TEMPLATES, **config.eval.zeroshot_prompts})
        rows += [row(name, a, "zeroshot", v) for a, v in zeroshot.items()]
        for a, benchmark in (paired_benchmarks(test, config) if benchmarks is None else benchmarks).items():
            solved = score_embedded_pairs(model, test_x[torch.as_tensor(benchmark.rows)], benchmark.statements,
                                          embedder=embedder)
            rows.append(row(name, a, "paired", solved.float().mean()))
        if config.eval.linear_max_iter:  # 0: the linear probe is off
            train_x = embedder.images(train.images)
            rows += [row(name, a, "linear", linear_probe(train_x, train.attributes[a], test_x, test.attributes[a],
                                                         config.eval.linear_c, config.eval.linear_max_iter))
                     for a in test.attribute_names()]
    if test.captions is not None:
        for key, value in retrieval_recall(model, test.images, test.captions, ks=(1, 5, 10), image_embeddings=test_x,
                                           embedder=embedder).items():
            direction, k = key.split("_R@")
            rows.append(row(name, "caption", f"{RETRIEVAL_PROBES[direction]}@{k}", value))
    return rows


def clip_blind_pairs(representations: dict[str, MultistageTwoTower], test: ImageTable,
                     config: Config, embedders: dict[str, Embedder] | None = None) -> dict:
    """CLIP-blind test pairs per attribute: most alike for the initial model (stage 0, else 1), one attribute apart.

    ``embedders``: each representation's embeddings (default: encode with its model).
    """
    name = next((n for n in ("stage-0", "stage-1") if representations.get(n) is not None), None)
    if not config.eval.clip_blind_pairs or name is None or not test.attribute_names():
        return {}
    embedder = (embedders or {}).get(name) or ModelEmbedder(representations[name])
    return mine_clip_blind_pairs(embedder.images(test.images), test, config.eval.clip_blind_pairs)


def evaluate_image_text(run: RunDirectory, config: Config, train: ImageTable, test: ImageTable,
                        load_member: Callable[[str], MultistageTwoTower]) -> list[dict[str, Any]]:
    """Every row (zero-shot, paired, linear, retrieval) of every representation of a multimodal run."""
    benchmarks = paired_benchmarks(test, config) if test.attribute_names() else {}
    both = representation_embedders(run, config, load_member)
    representations = {name: model for name, (model, _) in both.items()}
    embedders: dict[str, Embedder] = {name: embedder for name, (_, embedder) in both.items()}
    blind = clip_blind_pairs(representations, test, config, embedders)
    rows = []
    for name, model in representations.items():
        model_rows = score_representation(name, model, train, test, config, benchmarks, embedders[name])
        if blind:  # none mined: eval.clip_blind_pairs is 0, or the data has no attribute columns
            model_rows += [row(name, a, "clip-blind", v)
                           for a, v in score_clip_blind(model, test, blind, embedder=embedders[name]).items()
                           if v == v]  # NaN: no such pair
        logger.info("%s: scored %d rows", name, len(model_rows))  # the values are printed once, in the tables
        rows += model_rows
    return rows
