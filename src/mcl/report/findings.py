"""What ``eval.json`` says, as numbers and one sentence: probe matrices, chance levels, the headline.

Pure functions on ``eval.json``'s content (no run directory, no plotting), so they are tested on
hand-written results.

- :func:`probe_matrices`: ``probe -> (representations, columns, values)``, NaN where a row is missing;
- :func:`chance_levels`: ``attribute -> 1 / number of its values`` (what guessing the most
  balanced way scores), from ``eval.json``'s ``attribute_classes`` if it has them, else the data's;
- :func:`headline`: the run's finding in one sentence, e.g. ``By linear probe, stage 1 suppressed
  texture (42% vs chance 10%); mcl-3 recovered it to 74% (ensemble-3, as many seeds of stage 1: 57%).``

The headline picks stage 1's weakest attribute by *lift over chance*, ``(accuracy - chance) /
(1 - chance)`` (0 = chance, 1 = perfect), so attributes with different numbers of values compare
fairly; it calls the attribute suppressed when the lift is below :data:`SUPPRESSED_LIFT`, and
recovered when the best ``mcl-k`` beats stage 1 on it by :data:`RECOVERED_GAIN` or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SUPPRESSED_LIFT = 0.5  # below half-way from chance to perfect, stage 1 left the attribute mostly out
RECOVERED_GAIN = 0.05  # accuracy points an mcl-k must add over stage 1 to count as recovering
CLAIM_PROBE = "linear"  # the probe the headline and the suppression chart are about
CLASSIFICATION_PROBES = ("linear", "knn", "zeroshot")  # probes whose chance is 1 / number of values

Matrix = tuple[list[str], list[str], np.ndarray]


def _row_value(row: dict[str, Any]) -> float | None:
    """The row's score: ``accuracy`` if present, else its first other numeric field."""
    value = row.get("accuracy")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for key, value in row.items():
        if key not in ("representation", "attribute", "probe") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            return float(value)
    return None


def probe_matrices(rows: list[dict[str, Any]]) -> dict[str, Matrix]:
    """``probe kind -> (representations, attributes, values)``; missing cells are NaN.

    Works for any probe kind: a row needs a score (``accuracy`` or another number); its column is
    ``attribute`` (else ``task``/``category``/``benchmark``), its row ``representation``.
    """
    cells: dict[str, dict[tuple[str, str], float]] = {}
    for row in rows:
        value = _row_value(row)
        if value is None:
            continue
        column = next((str(row[k]) for k in ("attribute", "task", "category", "benchmark") if k in row), "score")
        cells.setdefault(str(row.get("probe", "probe")), {})[(str(row.get("representation", "model")), column)] = value
    out = {}
    for probe, values in cells.items():
        names = list(dict.fromkeys(name for name, _ in values))
        columns = list(dict.fromkeys(column for _, column in values))
        matrix = np.array([[values.get((n, c), np.nan) for c in columns] for n in names], dtype=float)
        out[probe] = (names, columns, matrix)
    return out


def chance_levels(result: Mapping[str, Any], data_classes: Mapping[str, int] | None = None) -> dict[str, float]:
    """``attribute -> 1 / number of values``: from ``result["attribute_classes"]``, else ``data_classes``."""
    classes = result.get("attribute_classes") or data_classes or {}
    return {str(name): 1.0 / int(count) for name, count in classes.items() if int(count) > 0}


def _number(name: str, prefix: str) -> int | None:
    suffix = name[len(prefix):] if name.startswith(prefix) else ""
    return int(suffix) if suffix.isdigit() else None


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


@dataclass(frozen=True)
class Claim:
    """Stage 1's weakest attribute (by lift over chance) and what the best ``mcl-k`` and ``ensemble-k`` made of it."""

    attribute: str
    stage1: float
    chance: float | None
    k: int | None = None  # the best mcl-k on the attribute (fewest stages on ties); None without mcl rows
    mcl: float | None = None
    ensemble: float | None = None  # ensemble-k of the same k, when eval.json has it

    @property
    def suppressed(self) -> bool:
        """Whether stage 1 stayed below :data:`SUPPRESSED_LIFT` of the way from chance to perfect."""
        return self.chance is not None and _lift(self.stage1, self.chance) < SUPPRESSED_LIFT

    @property
    def recovered(self) -> bool:
        """Whether the best mcl-k beat stage 1 on the attribute by :data:`RECOVERED_GAIN` or more."""
        return self.mcl is not None and self.mcl >= self.stage1 + RECOVERED_GAIN


def _lift(accuracy: float, chance: float) -> float:
    return (accuracy - chance) / (1 - chance) if chance < 1 else 0.0


def find_claim(result: Mapping[str, Any], chance: Mapping[str, float]) -> Claim | None:
    """The :class:`Claim` of ``eval.json``'s linear-probe rows; None without a stage-1 row."""
    matrix = probe_matrices(list(result.get("rows", []))).get(CLAIM_PROBE)
    if matrix is None or "stage-1" not in matrix[0]:
        return None
    names, columns, values = matrix
    stage1 = values[names.index("stage-1")]
    candidates = [j for j in range(len(columns)) if np.isfinite(stage1[j])]
    if not candidates:
        return None
    weakest = min(candidates, key=lambda j: _lift(float(stage1[j]), chance.get(columns[j], 0.0)))
    claim = Claim(columns[weakest], float(stage1[weakest]), chance.get(columns[weakest]))
    integrated = [(k, float(values[i, weakest])) for i, name in enumerate(names)
                  if (k := _number(name, "mcl-")) is not None and np.isfinite(values[i, weakest])]
    if not integrated:
        return claim
    k, best = max(integrated, key=lambda item: (item[1], -item[0]))  # best score, fewest stages on ties
    ensemble = None
    if f"ensemble-{k}" in names and np.isfinite(value := values[names.index(f"ensemble-{k}"), weakest]):
        ensemble = float(value)
    return Claim(claim.attribute, claim.stage1, claim.chance, k, best, ensemble)


def headline(result: Mapping[str, Any], chance: Mapping[str, float]) -> str | None:
    """The run's finding in one sentence, from the linear-probe rows of ``eval.json``; None without stage-1 rows.

    Example: ``By linear probe, stage 1 suppressed texture (42% vs chance 10%); mcl-3 recovered it
    to 74% (ensemble-3, as many seeds of stage 1: 57%).``
    """
    claim = find_claim(result, chance)
    if claim is None:
        return None
    against = f" vs chance {_percent(claim.chance)}" if claim.chance is not None else ""
    measured = f"{claim.attribute} ({_percent(claim.stage1)}{against})"
    if claim.suppressed:
        sentence = f"By {CLAIM_PROBE} probe, stage 1 suppressed {measured}"
    else:
        sentence = f"By {CLAIM_PROBE} probe, stage 1's weakest attribute is {measured}"
    if claim.mcl is None:
        return sentence + "."
    score = _percent(claim.mcl)
    verb = f"recovered it to {score}" if claim.recovered else f"left it at {score}"
    sentence += f"; mcl-{claim.k} {verb}"
    if claim.ensemble is not None:
        sentence += f" (ensemble-{claim.k}, as many seeds of stage 1: {_percent(claim.ensemble)})"
    return sentence + "."
