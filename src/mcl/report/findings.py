"""What ``eval.json`` says, as numbers and one sentence: probe matrices, chance levels, the headline.

Pure functions on ``eval.json``'s content (no run directory, no plotting), so they are tested on
hand-written results.

- :func:`probe_matrices`: ``probe -> (representations, columns, values)``, NaN where a row is missing;
- :func:`chance_levels`: ``attribute -> 1 / number of its values`` (what guessing the most
  balanced way scores), from ``eval.json``'s ``attribute_classes`` if it has them, else the data's;
- :func:`headline`: the run's finding in one sentence, for the run's :class:`~mcl.report.recipe.Recipe`.

Unimodal runs (:func:`find_claim`), e.g. ``By linear probe, stage 1 suppressed texture (42% vs chance
10%); mcl-3 recovered it to 74% (ensemble-3, as many seeds of stage 1: 57%).`` The headline picks
stage 1's weakest attribute by *lift over chance*, ``(accuracy - chance) / (1 - chance)`` (0 = chance,
1 = perfect), so attributes with different numbers of values compare fairly; it calls the attribute
suppressed when the lift is below :data:`SUPPRESSED_LIFT`, and recovered when the best ``mcl-k`` beats
stage 1 on it by :data:`RECOVERED_GAIN` or more *and* by more than the 95% margin of the difference.

Uncertainty: with ``eval.json``'s ``test_rows`` (n) every accuracy in the headline carries the half-width of
its 95% Wilson score interval (``74% ± 3``; :func:`binomial_interval`), and a difference counts only beyond
``1.96 * sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)`` (:func:`difference_margin`; the two scores come from the
same test images, for which this unpaired margin is conservative). A gain inside it is reported as such,
never as a recovery.

Fine-tuning runs (``stage-0`` and ``finetune-k`` rows, :func:`find_finetune_claim`): stage 0's weakest
attribute by the same lift (zero-shot when there are zero-shot rows, else linear probe), then MCL
against plain fine-tuning at equal steps on it, e.g. ``Stage 0 is weakest at mark (zero-shot 21.8%,
chance 25%). MCL: stage-1 40.3% vs plain fine-tuning (finetune-1, same steps) 35.1% (+5.2 points);
mcl-2 43.5% vs finetune-2 43.9% (-0.4 points).``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcl.report.recipe import (
    ENSEMBLE,
    FINETUNE,
    FINETUNE_CONCAT,
    Recipe,
    counterpart,
    member_number,
    probe_label,
    recipe_of,
)

SUPPRESSED_LIFT = 0.5  # below half-way from chance to perfect, stage 1 left the attribute mostly out
RECOVERED_GAIN = 0.05  # accuracy points an mcl-k must add over stage 1 to count as recovering
Z95 = 1.959964  # standard normal quantile of a two-sided 95% interval
CLAIM_PROBE = "linear"  # the probe of the unimodal headline and claim chart (fine-tuning runs: Recipe.probe)
CLASSIFICATION_PROBES = ("linear", "knn", "zeroshot")  # probes whose chance is 1 / number of values

Matrix = tuple[list[str], list[str], np.ndarray]


def binomial_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on ``n`` test samples (95% by default).

    >>> [round(v, 3) for v in binomial_interval(0.75, 1000)]
    [0.722, 0.776]
    """
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def difference_margin(a: float, b: float, n: int, z: float = Z95) -> float:
    """How far apart two accuracies on ``n`` test samples must be to differ at 95% (unpaired binomial)."""
    return float(z * np.sqrt(max(a * (1 - a) + b * (1 - b), 1e-12) / n)) if n > 0 else 1.0


def sample_count(result: Mapping[str, Any]) -> int | None:
    """``eval.json``'s ``test_rows`` (the n behind every accuracy), or None when missing or not a positive integer."""
    value = result.get("test_rows")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _percent1(value: float) -> str:
    """One decimal (``21.8%``, ``65.0%``)."""
    return f"{100 * value:.1f}%"


def _chance1(value: float) -> str:
    """A chance level, one decimal without a trailing ``.0`` (``25%``, ``33.3%``)."""
    return _percent1(value).replace(".0%", "%")


@dataclass(frozen=True)
class Claim:
    """Stage 1's weakest attribute (by lift over chance) and what the best ``mcl-k`` and its baseline made of it."""

    attribute: str
    stage1: float
    chance: float | None
    k: int | None = None  # the best mcl-k on the attribute (fewest stages on ties); None without mcl rows
    mcl: float | None = None
    baseline: str | None = None  # ensemble-k (else finetune-k) of the same k, when eval.json has it
    baseline_score: float | None = None
    n: int | None = None  # test samples behind each accuracy (eval.json's test_rows); None: unknown

    @property
    def suppressed(self) -> bool:
        """Whether stage 1 stayed below :data:`SUPPRESSED_LIFT` of the way from chance to perfect."""
        return self.chance is not None and _lift(self.stage1, self.chance) < SUPPRESSED_LIFT

    @property
    def recovered(self) -> bool:
        """Whether the best mcl-k beat stage 1 on the attribute by :data:`RECOVERED_GAIN` or more, beyond the
        95% margin of the difference when the test count is known."""
        return self.mcl is not None and self.mcl >= self.stage1 + RECOVERED_GAIN and not self.within_noise

    @property
    def within_noise(self) -> bool:
        """Whether mcl-k and stage 1 differ by no more than the 95% margin (False when n is unknown)."""
        return self.mcl is not None and self.n is not None and \
            abs(self.mcl - self.stage1) <= difference_margin(self.mcl, self.stage1, self.n)


@dataclass(frozen=True)
class FinetuneClaim:
    """Stage 0's weakest attribute by ``probe`` and, per ``finetune-k``, MCL's score on it against the baseline's.

    ``pairs``: ``(MCL representation, its score, its baseline, the baseline's score)`` by k, each MCL
    representation against its own baseline (:func:`~mcl.report.recipe.counterpart`: stage-1 vs finetune-1,
    mcl-k vs finetune-k, or vs finetune-concat-k when mcl-k holds stage 0), only where both have a row.
    """

    probe: str
    attribute: str
    stage0: float
    chance: float | None
    pairs: tuple[tuple[str, float, str, float], ...] = ()
    n: int | None = None  # test samples behind each score (eval.json's test_rows); None: unknown


def _lift(accuracy: float, chance: float) -> float:
    return (accuracy - chance) / (1 - chance) if chance < 1 else 0.0


def _weakest(values: np.ndarray, columns: list[str], chance: Mapping[str, float]) -> int | None:
    """The column of the lowest lift over chance among the finite ``values``; None when none is finite."""
    candidates = [j for j in range(len(columns)) if np.isfinite(values[j])]
    if not candidates:
        return None
    return min(candidates, key=lambda j: _lift(float(values[j]), chance.get(columns[j], 0.0)))


def find_claim(result: Mapping[str, Any], chance: Mapping[str, float]) -> Claim | None:
    """The :class:`Claim` of ``eval.json``'s linear-probe rows; None without a stage-1 row."""
    matrix = probe_matrices(list(result.get("rows", []))).get(CLAIM_PROBE)
    if matrix is None or "stage-1" not in matrix[0]:
        return None
    names, columns, values = matrix
    stage1 = values[names.index("stage-1")]
    weakest = _weakest(stage1, columns, chance)
    if weakest is None:
        return None
    n = sample_count(result)
    claim = Claim(columns[weakest], float(stage1[weakest]), chance.get(columns[weakest]), n=n)
    integrated = [(k, float(values[i, weakest])) for i, name in enumerate(names)
                  if (k := member_number(name, "mcl")) is not None and np.isfinite(values[i, weakest])]
    if not integrated:
        return claim
    k, best = max(integrated, key=lambda item: (item[1], -item[0]))  # best score, fewest stages on ties
    baseline = recipe_of(result).baseline
    name = f"{baseline}-{k}"
    if baseline and name in names and np.isfinite(value := values[names.index(name), weakest]):
        return Claim(claim.attribute, claim.stage1, claim.chance, k, best, name, float(value), n)
    return Claim(claim.attribute, claim.stage1, claim.chance, k, best, n=n)


def find_finetune_claim(result: Mapping[str, Any], chance: Mapping[str, float],
                        recipe: Recipe | None = None) -> FinetuneClaim | None:
    """The :class:`FinetuneClaim` of a fine-tuning run's rows; None unless ``recipe`` (of ``result``) fine-tunes."""
    recipe = recipe or recipe_of(result)
    matrix = probe_matrices(list(result.get("rows", []))).get(recipe.probe)
    if not recipe.fine_tuning or matrix is None or recipe.reference not in matrix[0]:
        return None
    names, columns, values = matrix
    stage0 = values[names.index(recipe.reference)]
    weakest = _weakest(stage0, columns, chance)
    if weakest is None:
        return None
    pairs = []
    baseline_k = {n: k for n in names
                  if (k := member_number(n, FINETUNE) or member_number(n, FINETUNE_CONCAT)) is not None}
    # by k, the single-model pair first: stage-1 vs finetune-1, mcl-1 vs finetune-concat-1, stage-2 vs finetune-2, ...
    for name in sorted(baseline_k, key=lambda n: (baseline_k[n], n.startswith(FINETUNE_CONCAT))):
        mcl = counterpart(name, names)
        if mcl in names:
            ours, theirs = values[names.index(mcl), weakest], values[names.index(name), weakest]
            if np.isfinite(ours) and np.isfinite(theirs):
                pairs.append((mcl, float(ours), name, float(theirs)))
    return FinetuneClaim(recipe.probe, columns[weakest], float(stage0[weakest]), chance.get(columns[weakest]),
                         tuple(pairs), sample_count(result))


def _finetune_headline(claim: FinetuneClaim) -> str:
    against = f", chance {_chance1(claim.chance)}" if claim.chance is not None else ""
    sentence = (f"Stage 0 is weakest at {claim.attribute} ({probe_label(claim.probe)} "
                f"{_percent1(claim.stage0)}{against}).")
    if not claim.pairs:
        return sentence
    parts = []
    for i, (mcl, ours, baseline, theirs) in enumerate(claim.pairs):
        which = f"plain fine-tuning ({baseline}, same steps)" if i == 0 else baseline
        margin = f" ± {100 * difference_margin(ours, theirs, claim.n):.1f}" if claim.n else ""
        parts.append(f"{mcl} {_percent1(ours)} vs {which} {_percent1(theirs)} "
                     f"({100 * (ours - theirs):+.1f}{margin} points)")
    note = f" (± : 95% margin of a difference on {claim.n} test images)" if claim.n else ""
    return f"{sentence} MCL: {'; '.join(parts)}.{note}"


def headline(result: Mapping[str, Any], chance: Mapping[str, float], recipe: Recipe | None = None) -> str | None:
    """The run's finding in one sentence (see the module docstring); None without the rows it needs.

    ``recipe``: the run's (default: :func:`~mcl.report.recipe.recipe_of` ``result``). Fine-tuning runs
    get the stage-0 / finetune-k sentence, every other run the unimodal one, e.g. ``By linear probe,
    stage 1 suppressed texture (42% vs chance 10%); mcl-3 recovered it to 74% (ensemble-3, as many
    seeds of stage 1: 57%).``
    """
    recipe = recipe or recipe_of(result)
    if recipe.fine_tuning and (finetune := find_finetune_claim(result, chance, recipe)) is not None:
        return _finetune_headline(finetune)
    claim = find_claim(result, chance)
    if claim is None:
        return None
    def score(value: float) -> str:  # with the 95% interval's half-width when the test count is known
        if claim.n is None:
            return _percent(value)
        low, high = binomial_interval(value, claim.n)
        return f"{_percent(value)} ± {100 * (high - low) / 2:.0f}"

    against = f" vs chance {_percent(claim.chance)}" if claim.chance is not None else ""
    measured = f"{claim.attribute} ({score(claim.stage1)}{against})"
    if claim.suppressed:
        sentence = f"By {CLAIM_PROBE} probe, stage 1 suppressed {measured}"
    else:
        sentence = f"By {CLAIM_PROBE} probe, stage 1's weakest attribute is {measured}"
    if claim.mcl is None:
        return sentence + "."
    reached = score(claim.mcl)
    if claim.recovered:
        verb = f"recovered it to {reached}"
    elif claim.within_noise and claim.mcl > claim.stage1:
        verb = f"reached {reached}, within the 95% uncertainty of stage 1's on {claim.n} test images (no recovery)"
    else:
        verb = f"left it at {reached}"
    sentence += f"; mcl-{claim.k} {verb}"
    if claim.baseline is not None and claim.baseline_score is not None:
        what = "as many seeds of stage 1" if claim.baseline.startswith(ENSEMBLE) else "plain training, same steps"
        sentence += f" ({claim.baseline}, {what}: {score(claim.baseline_score)})"
    return sentence + "."
