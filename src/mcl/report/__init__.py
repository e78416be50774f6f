"""``mcl report RUN_DIR``: what a run learned, as one self-contained HTML page.

Writes ``RUN_DIR/report/report.html`` (every picture inlined as a base64 PNG data URI: no network,
no external files needed) and the same PNGs beside it. The page opens with a headline sentence
computed from ``eval.json`` (:func:`mcl.report.findings.headline`), preceded by a warning when
``eval.json`` is STALE (older than the run's newest weights) or PARTIAL (written before every stage
finished); then a summary of the run and the sections of its modality
(:data:`mcl.report.sections.SECTIONS`).

Modules: :mod:`~mcl.report.data` reads the run (records, eval.json, models' features),
:mod:`~mcl.report.recipe` decides what the run compares MCL against (``ensemble-k`` for unimodal
runs; for fine-tuning runs, a stage 0 and ``finetune-k``: plain fine-tuning at equal steps),
:mod:`~mcl.report.findings` turns eval.json into numbers and the headline,
:mod:`~mcl.report.plots` draws figures from arrays, :mod:`~mcl.report.sections` pairs the two per
section, :mod:`~mcl.report.page` writes the HTML.

A section with nothing to show yet (no ``eval.json``, no finished stage, a data set that moved)
becomes a note on the page; every other failure is an error.

Example:
    >>> write_report("runs/demo")            # -> runs/demo/report/report.html
    >>> write_report("runs/demo", "umap")    # feature maps by UMAP (needs umap-learn)
"""

from __future__ import annotations

import logging
from pathlib import Path

from mcl.errors import ConfigError
from mcl.files import write_bytes
from mcl.report.data import Evaluation, ReportRun
from mcl.report.findings import (
    Claim,
    FinetuneClaim,
    chance_levels,
    find_claim,
    find_finetune_claim,
    headline,
    probe_matrices,
)
from mcl.report.page import render_html
from mcl.report.recipe import Recipe, recipe_of
from mcl.report.sections import FEATURE_MAPS, SECTIONS, Picture, Section, sections_for
from mcl.run import REPORT_DIR, REPORT_FILE

__all__ = ["REPORT_DIR", "REPORT_FILE", "SECTIONS", "Claim", "Evaluation", "FinetuneClaim", "Picture", "Recipe",
           "ReportRun", "Section", "chance_levels", "find_claim", "find_finetune_claim", "headline", "probe_matrices",
           "recipe_of", "write_report"]

logger = logging.getLogger("mcl")


def _check_feature_map(feature_map: str) -> None:
    if feature_map not in FEATURE_MAPS:
        raise ConfigError(f"feature map {feature_map!r}: expected one of {', '.join(FEATURE_MAPS)}")
    if feature_map == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ConfigError("--map umap: the 'umap-learn' package is not installed "
                              "(pip install umap-learn)") from None


def write_report(run_dir: str | Path, feature_map: str = "pca") -> Path:
    """Write ``RUN_DIR/report/report.html`` and its PNGs (atomically); returns the HTML's path.

    ``feature_map``: ``pca`` or ``umap`` (needs ``umap-learn``) for ``feature_map.png``. Nothing is
    written unless every section could be built.
    """
    _check_feature_map(feature_map)
    run = ReportRun(run_dir, feature_map)
    sections = []
    for section in sections_for(run):
        logger.info("report: %s", section.__name__.replace("_", " "))
        sections.append(section(run))
    evaluation = run.evaluation
    sentence = headline(evaluation.result, run.chance(), run.recipe) if evaluation else None
    out = run.root / REPORT_DIR
    for picture in (p for section in sections for p in section.pictures):
        write_bytes(out / picture.name, picture.png)
    write_bytes(out / REPORT_FILE, render_html(run, sections, sentence).encode())
    return out / REPORT_FILE
