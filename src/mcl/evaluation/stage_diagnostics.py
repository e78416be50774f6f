"""The stages' recorded diagnostics as eval.json's ``diagnostics`` list and as a printed table.

Each finished stage contributes ``stage-s/diagnostics.json`` (written after the stage trained, see
:mod:`mcl.diagnostics`); a run recorded before diagnostics existed still gets ``groups_trained`` and
``mean_negatives`` from its ``pseudo_labels.json`` (stage 1: one group of random batches).

Example row: ``{"stage": 2, "groups_trained": 10, "mean_negatives": 119.1, "novelty": 0.26, ...}``.
"""

from __future__ import annotations

from typing import Any

from mcl.config import Config
from mcl.files import read_json
from mcl.run import DIAGNOSTICS_FILE, PSEUDO_LABELS_INFO_FILE, RunDirectory

# Columns of the printed table: key -> header.
COLUMNS = {"groups_trained": "groups", "mean_negatives": "negatives", "novelty": "novelty",
           "view_novelty": "view novelty",
           "rankme": "RankMe", "uniformity": "uniformity", "nmi_previous": "NMI prev", "stability": "stability",
           "new_structure": "new structure"}


def recorded_diagnostics(run: RunDirectory, config: Config, stages: list[int]) -> list[dict[str, Any]]:
    """One dict per stage in ``stages``: its diagnostics.json, or the group counts its pseudo-labels imply."""
    out = []
    for stage in stages:
        path = run.stage_dir(stage) / DIAGNOSTICS_FILE
        if path.exists():
            out.append(read_json(path))
            continue
        info_path = run.stage_dir(stage) / PSEUDO_LABELS_INFO_FILE
        if info_path.exists():
            info = read_json(info_path)
            groups = info.get("groups_trained", sum(1 for size in info.get("group_sizes", []) if size >= 2))
            out.append({"stage": stage, "groups_trained": groups, "mean_negatives": info.get("mean_negatives")})
        else:
            out.append({"stage": stage, "groups_trained": 1, "mean_negatives": float(config.train.batch_size - 1)})
    return out


def format_diagnostics(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: one line per stage, the columns of :data:`COLUMNS` (``-`` where not recorded)."""
    if not rows:
        return ""
    header = ["stage", *COLUMNS.values()]
    lines = [header]
    for row in rows:
        cells = [f"stage-{row['stage']}"]
        for key in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else (f"{value:d}" if isinstance(value, int) else f"{value:.3g}"))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    return "Stage diagnostics (label-free; groups = pseudo-label groups that trained)\n" + "\n".join(text)
