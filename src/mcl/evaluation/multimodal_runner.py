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
from pathlib import Path
from typing import Any

import torch

from mcl.api import (
    finished_ensemble_members,
    finished_stages,
    load_member,
    load_table_for,
    read_run_config,
    resolve_data,
)
from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.errors import DataError
from mcl.evaluation.mmvp import PairedBenchmark, build_paired_benchmark, score_embedded_pairs
from mcl.evaluation.probes import linear_probe
from mcl.evaluation.runner import format_table
from mcl.evaluation.zeroshot import encode_images, retrieval_recall, zeroshot_attributes
from mcl.io import write_json
from mcl.multimodal import MultistageTwoTower
from mcl.rundir import RunDirectory
from mcl.stages import ENCODER_FILE

logger = logging.getLogger("mcl")

RETRIEVAL_PROBES = {"image_to_text": "retrieval-i2t", "text_to_image": "retrieval-t2i"}


def two_tower_representations(run_dir: str | Path, config: Config) -> dict[str, MultistageTwoTower]:
    """Every representation of a multimodal run to score, as (views of) :class:`MultistageTwoTower`."""
    run = RunDirectory(run_dir)
    stages = finished_stages(run_dir, config)
    if stages == 0:
        raise DataError(f"{run_dir}: no finished stage to evaluate; run 'mcl train' first")
    models = [load_member(run_dir, f"stage-{s}", config) for s in range(1, stages + 1)]
    has_stage0 = config.multimodal.stage0 and run.is_finished(run.stage_dir(0) / ENCODER_FILE)
    stage0 = load_member(run_dir, "stage-0", config) if has_stage0 else None
    include_stage0 = has_stage0 and config.multimodal.integrate_stage0
    full = MultistageTwoTower(models, config.mcl.integration, stage0, include_stage0)
    out = {"stage-0": full.select([0])} if has_stage0 else {}
    out.update({f"stage-{s}": full.select([s]) for s in range(1, stages + 1)})
    out.update({f"mcl-{k}": full.select(k) for k in range(1 if include_stage0 else 2, stages + 1)})
    members = [models[0]]
    for k in range(2, 2 + finished_ensemble_members(run_dir, config)):
        members.append(load_member(run_dir, f"ensemble-{k}", config))
        out[f"ensemble-{k}"] = MultistageTwoTower(list(members), config.mcl.integration)
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


def evaluate_multimodal_run(run_dir: str | Path, data: str | Path | None = None,
                            progress: bool = True) -> dict[str, Any]:
    """Score every representation of a multimodal run; writes and returns ``eval.json``'s content."""
    run_dir = Path(run_dir)
    config = resolve_data(read_run_config(run_dir), run_dir, data, progress)
    table = load_table_for(config, progress)
    train, test = table.subset("train"), table.subset("test")
    if len(test) == 0:
        raise DataError(f"{config.data.path}/labels.csv: no rows with split=test to evaluate on")
    benchmarks = paired_benchmarks(test, config) if test.attribute_names() else {}
    rows = []
    for name, model in two_tower_representations(run_dir, config).items():
        model_rows = score_representation(name, model, train, test, config, benchmarks)
        logger.info("%s: %s", name, ", ".join(f"{r['probe']}[{r['attribute']}]={r['accuracy']:.3f}"
                                               for r in model_rows))
        rows += model_rows
    result = {"kind": "multimodal", "data": config.data.path, "train_rows": len(train), "test_rows": len(test),
              "rows": rows}
    write_json(run_dir / "eval.json", result)
    return result


def format_tables(result: dict[str, Any]) -> str:
    """Percentages per representation: one table per attribute probe, one for retrieval."""
    probes = list(dict.fromkeys(r["probe"] for r in result["rows"]))
    tables = [format_table(result, probe) for probe in ("zeroshot", "paired", "linear") if probe in probes]
    retrieval = [{**r, "attribute": r["probe"].removeprefix("retrieval-"), "probe": "retrieval"} for r in result["rows"]
                 if r["probe"].startswith("retrieval-")]
    if retrieval:
        tables.append(format_table({"rows": retrieval}, "retrieval"))
    return "\n\n".join(tables)


def compare(result: dict[str, Any], probe: str, first: str, second: str) -> str:
    """One line per attribute: ``probe`` accuracy (%) of two representations and the difference."""
    lookup = {(r["representation"], r["attribute"]): r["accuracy"] for r in result["rows"] if r["probe"] == probe}
    attributes = list(dict.fromkeys(a for _, a in lookup))
    lines = [f"{probe}: {first} -> {second}"]
    for attribute in attributes:
        if (first, attribute) in lookup and (second, attribute) in lookup:
            a, b = 100 * lookup[(first, attribute)], 100 * lookup[(second, attribute)]
            lines.append(f"  {attribute:<10} {a:6.1f} -> {b:6.1f}  ({b - a:+.1f})")
    return "\n".join(lines)
