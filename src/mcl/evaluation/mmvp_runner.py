"""MMVP-VLM scores of every representation of a multimodal run (``mcl eval-mmvp``).

For each representation of the run (:func:`~mcl.evaluation.multimodal_runner.representation_embedders`:
``stage-0``, ``stage-s``, ``mcl-k``, ``ensemble-k``), :func:`~mcl.evaluation.mmvp.score_mmvp` on the
MMVP-VLM pairs; the result uses ``eval.json``'s row schema with ``probe = "mmvp"`` and one row per
MMVP category plus ``average``.

Example:
    >>> result = mmvp_rows("runs/demo-multimodal", "data/MMVP_VLM")
    >>> result["rows"][0]  # {"representation": "stage-1", "attribute": "Orientation and Direction", ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcl.api import load_member, read_run_config
from mcl.errors import ConfigError
from mcl.evaluation.mmvp import MMVP_BATCH_SIZE, load_mmvp, score_mmvp
from mcl.evaluation.multimodal_runner import representation_embedders, row
from mcl.modalities import IMAGE_TEXT, modality_of
from mcl.run import CONFIG_FILE, RunDirectory


def mmvp_rows(run_dir: str | Path, mmvp_dir: str | Path, image_size: int | None = None) -> dict[str, Any]:
    """MMVP-VLM scores of every representation of a multimodal run (``eval.json`` row schema).

    Rows: ``{representation, attribute: <MMVP category> | "average", probe: "mmvp", accuracy}``.
    Images are decoded at ``image_size`` (default: the run's ``data.image_size``); each model then
    applies its own preprocessing. A run that is not image-text is a :class:`ConfigError`.
    """
    run = RunDirectory(run_dir)
    config = read_run_config(run_dir)
    if modality_of(config) is not IMAGE_TEXT:
        raise ConfigError(f"{run.root / CONFIG_FILE}: not a multimodal run (its config's multimodal "
                          "section is not enabled); MMVP-VLM scores image-text models")
    size = image_size or config.data.image_size
    benchmark = load_mmvp(mmvp_dir, image_size=size)
    rows = []
    # Each member encodes the MMVP images and statements once (score_mmvp's batch size: the same numbers).
    models = representation_embedders(run, config, lambda member: load_member(run.root, member, config),
                                      MMVP_BATCH_SIZE)
    for name, (model, embedder) in models.items():
        scores = score_mmvp(model, benchmark, MMVP_BATCH_SIZE, embedder)
        for category, accuracy in [*scores["categories"].items(), ("average", scores["average"])]:
            rows.append(row(name, category, "mmvp", accuracy))
    return {"kind": "mmvp", "mmvp_dir": str(mmvp_dir), "image_size": size, "rows": rows}
