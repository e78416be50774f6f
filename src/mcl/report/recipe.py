"""What a run compares MCL against, decided in one place for the headline, the claim chart and the page's texts.

Two recipes produce runs:

- *unimodal* (``mcl demo``): stage 1 is trained first and suppresses some attribute; the question is
  whether ``mcl-k`` recovers it, against ``ensemble-k`` (k seeds of stage 1 integrated);
- *fine-tuning* (``mcl demo --multimodal``): an aligned ``stage-0`` is fine-tuned with MCL; the
  question is which attribute stage 0 is weakest at and whether MCL beat plain fine-tuning at equal
  steps (``finetune-k``: stage-1 vs finetune-1, mcl-k vs finetune-k; when mcl-k holds stage 0, mcl-k vs
  ``finetune-concat-k`` and stage-k vs finetune-k: :func:`counterpart`) on it, by zero-shot accuracy
  when there are zero-shot rows.

:func:`recipe_of` decides from the representations ``eval.json`` scored (what was measured), or, before
``mcl eval``, from the members the run holds. The modality itself is :func:`mcl.modalities.modality_of`'s.

Example:
    >>> recipe_of({"rows": [{"representation": "stage-0", "probe": "zeroshot", ...},
    ...                     {"representation": "finetune-1", ...}]})
    Recipe(baseline='finetune', reference='stage-0', probe='zeroshot')
    >>> counterpart("finetune-1"), counterpart("finetune-2"), counterpart("ensemble-3")
    ('stage-1', 'mcl-2', 'mcl-3')
    >>> counterpart("finetune-concat-2"), counterpart("finetune-2", ["finetune-concat-2"])
    ('mcl-2', 'stage-2')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FINETUNE = "finetune"  # finetune-k: plain fine-tuning for as many steps as stages 1..k (eval.finetune_baseline)
FINETUNE_CONCAT = "finetune-concat"  # finetune-concat-k: stage 0 + finetune-1..k integrated (when mcl-k holds stage 0)
ENSEMBLE = "ensemble"  # ensemble-k: k seeds of stage 1 integrated (eval.ensemble)
BASELINES = (FINETUNE, ENSEMBLE)
ZERO_SHOT, LINEAR = "zeroshot", "linear"
_PROBE_LABELS = {ZERO_SHOT: "zero-shot", LINEAR: "linear probe"}


def member_number(name: str, prefix: str) -> int | None:
    """``k`` of ``<prefix>-k`` (``member_number("mcl-3", "mcl") == 3``), else None."""
    suffix = name[len(prefix) + 1:] if name.startswith(prefix + "-") else ""
    return int(suffix) if suffix.isdigit() else None


def counterpart(name: str, names: Iterable[str] = ()) -> str | None:
    """The MCL representation a baseline row is compared with: the one of the same size and compute.

    finetune-1 -> stage-1 (one model after stage 1's steps faces stage 1 alone, as ``mcl demo`` compares
    them); finetune-concat-k (stage 0 + finetune-1..k) -> mcl-k (stage 0 + stages 1..k); finetune-k ->
    mcl-k, or stage-k when ``names`` holds finetune-concat-k (then mcl-k holds stage 0 and has its own
    baseline); ensemble-k -> mcl-k.
    """
    k = member_number(name, FINETUNE_CONCAT)
    if k is not None:
        return f"mcl-{k}"
    k = member_number(name, FINETUNE)
    if k is not None and k > 1 and f"{FINETUNE_CONCAT}-{k}" in set(names):
        return f"stage-{k}"
    for prefix in BASELINES:
        k = member_number(name, prefix)
        if k is not None:
            return "stage-1" if k == 1 else f"mcl-{k}"
    return None


def probe_label(probe: str) -> str:
    """How the page names a probe: ``zeroshot`` -> ``zero-shot``, ``linear`` -> ``linear probe``."""
    return _PROBE_LABELS.get(probe, f"{probe} probe")


@dataclass(frozen=True)
class Recipe:
    """What the run's results are compared against.

    ``baseline``: ``finetune``, ``ensemble`` or None (no baseline rows); ``reference``: the model whose
    weakest attribute the headline names (``stage-0`` in fine-tuning runs, else ``stage-1``); ``probe``:
    the probe of the headline and the claim chart.
    """

    baseline: str | None
    reference: str
    probe: str

    @property
    def fine_tuning(self) -> bool:
        """Whether the run fine-tunes a stage 0 beside a finetune-k baseline (the multimodal recipe)."""
        return self.reference == "stage-0"


def recipe_of(result: Mapping[str, Any], members: Iterable[str] = ()) -> Recipe:
    """The :class:`Recipe` of ``eval.json``'s rows, or of ``members`` (the run's representations) without rows.

    Fine-tuning runs have ``stage-0`` and ``finetune-k``; otherwise ``ensemble-k`` rows make the
    baseline ``ensemble`` (the unimodal recipe), else ``finetune-k`` rows (without a stage 0) ``finetune``.
    """
    rows = [row for row in result.get("rows", []) if isinstance(row, Mapping)]
    names = {str(row.get("representation")) for row in rows} or set(members)

    def has(prefix: str) -> bool:
        return any(member_number(name, prefix) is not None for name in names)

    if has(FINETUNE) and "stage-0" in names:
        baseline, reference = FINETUNE, "stage-0"
    else:
        baseline, reference = next((b for b in (ENSEMBLE, FINETUNE) if has(b)), None), "stage-1"
    zero_shot = any(row.get("probe") == ZERO_SHOT and row.get("representation") == reference for row in rows)
    return Recipe(baseline, reference, ZERO_SHOT if reference == "stage-0" and zero_shot else LINEAR)
