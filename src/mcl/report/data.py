"""Reading a run for the report: its records, its ``eval.json`` (and whether it is stale), its models' features.

:class:`ReportRun` is a read-only view of one run directory. Everything about *what* the run holds
comes from :class:`mcl.run.RunDirectory` (stages, members, representations, file names, weights
times), models from :func:`mcl.api.load_member`, and what differs between image and image-text runs
from the run's :class:`mcl.modalities.Modality` (``integrate``: the stages as one model whose
``embed(images, stages=)`` gives the features the maps show).

``eval.json`` is *stale* when it is older than the newest recorded weights (a stage or ensemble
member trained after ``mcl eval`` ran: its rows describe other models), and *partial* when it says
``unfinished_stages``; :attr:`ReportRun.evaluation` carries both, and the page says so.

What the run compares MCL against (``ensemble-k`` or ``finetune-k``, and with which probe) is
:attr:`ReportRun.recipe`, decided once by :func:`mcl.report.recipe.recipe_of`.

Example:
    >>> run = ReportRun(Path("runs/demo"))
    >>> run.evaluation.stale, run.evaluation.warnings()
    >>> run.features(images)      # {"stage-1": (N, D1), "stage-2": ..., "mcl-2": ...}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mcl.config import Config
from mcl.data.table import ImageTable
from mcl.errors import DataError
from mcl.files import load_arrays, read_json, read_jsonl
from mcl.modalities import Modality, modality_of
from mcl.report.findings import chance_levels
from mcl.report.recipe import FINETUNE, Recipe, member_number, recipe_of
from mcl.run import (
    CLUSTERS_INFO_FILE,
    EVAL_FILE,
    METRICS_FILE,
    PSEUDO_LABELS_FILE,
    PSEUDO_LABELS_INFO_FILE,
    Representation,
    RunDirectory,
)

logger = logging.getLogger("mcl")


def when(timestamp: float) -> str:
    """A file time as local ``YYYY-MM-DD HH:MM:SS`` (how the report dates eval.json and the weights)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@dataclass
class Evaluation:
    """``eval.json``'s content and how it relates to the weights the run holds now."""

    path: Path
    result: dict[str, Any]
    written: float  # eval.json's modification time
    latest_weights: float  # newest recorded member weights (RunDirectory.latest_weights_time)
    unfinished: list[int] = field(default_factory=list)  # stages eval.json says were not trained yet

    @property
    def stale(self) -> bool:
        """Whether some weights were written after ``eval.json``: its rows describe earlier models."""
        return self.written < self.latest_weights

    def warnings(self) -> list[str]:
        """One line per reason the rows do not score every weight the run holds now (empty when they do)."""
        out = []
        if self.stale:
            out.append(f"STALE: {self.path} (written {when(self.written)}) is older than the run's newest weights "
                       f"({when(self.latest_weights)}), so its rows describe models that have since changed; "
                       f"re-run 'mcl eval {self.path.parent}' to score the weights the run holds now")
        if self.unfinished:
            names = ", ".join(f"stage-{s}" for s in self.unfinished)
            out.append(f"PARTIAL: {self.path} scored only the stages finished when it was written ({names} "
                       f"not trained then); once training finished, re-run 'mcl eval {self.path.parent}'")
        return out


class ReportRun:
    """Read-only view of a run directory with the pieces the report's sections need, loaded lazily."""

    def __init__(self, root: str | Path, feature_map: str = "pca") -> None:
        self.run = RunDirectory(root)
        self.config: Config = self.run.config()
        self.run.read_manifest()  # a run directory of another format version is an error, not a page
        self.modality: Modality = modality_of(self.config)
        self.feature_map = feature_map
        self._members: dict[str, nn.Module] = {}

    @property
    def root(self) -> Path:
        """The run directory."""
        return self.run.root

    # ---- records written during training

    @cached_property
    def finished(self) -> list[int]:
        """Stage numbers 1, 2, ... whose final weights are recorded (and match their checksum)."""
        return self.run.finished_stages(self.config)

    @cached_property
    def representations(self) -> list[Representation]:
        """Every representation the finished members allow (``stage-s``, ``mcl-k``, ``ensemble-k``, ``stage-0``)."""
        return self.run.representations(self.config, include_stage0=self.config.multimodal.integrate_stage0)

    def baseline_members(self) -> list[str]:
        """``finetune-1`` ... of the finished finetune-k baseline (each one model, unlike ensemble-k)."""
        return [f"{FINETUNE}-{k}" for k in self.run.finished_finetune_members(self.config)]

    @cached_property
    def recipe(self) -> Recipe:
        """What the run compares MCL against, from eval.json's rows, else from the finished representations."""
        result = self.evaluation.result if self.evaluation else {}
        return recipe_of(result, [r.name for r in self.representations])

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """``member -> per-epoch records`` of every member directory with at least one epoch (finetune-k last)."""
        curves = {d.name: read_jsonl(d / METRICS_FILE) for d in self.run.member_dirs()}
        return {name: records for name, records in curves.items() if records}

    def cluster_sizes(self) -> dict[str, list[int]]:
        """``member -> k-means cluster sizes`` of every clustered member."""
        return {d.name: list(read_json(d / CLUSTERS_INFO_FILE)["sizes"]) for d in self.run.member_dirs()
                if (d / CLUSTERS_INFO_FILE).exists()}

    def pseudo_label_groups(self) -> dict[str, dict[str, Any]]:
        """``member -> pseudo_labels.json`` (group sizes, merges) of every stage that trained with pseudo-labels."""
        return {d.name: read_json(d / PSEUDO_LABELS_INFO_FILE) for d in self.run.member_dirs()
                if (d / PSEUDO_LABELS_INFO_FILE).exists()}

    def pseudo_labels(self, member: str, rows: np.ndarray) -> np.ndarray | None:
        """The pseudo-labels ``member`` trained with, at training rows ``rows``; None if it trained without."""
        path = self.run.member_dir(member) / PSEUDO_LABELS_FILE
        if not self.run.is_finished(path):
            return None
        return load_arrays(path)["pseudo_labels"][rows]

    # ---- eval.json

    @cached_property
    def evaluation(self) -> Evaluation | None:
        """``eval.json`` with its staleness, or None before ``mcl eval`` ran; warns in the log when stale or partial."""
        path = self.root / EVAL_FILE
        if not path.exists():
            return None
        result = read_json(path)
        if not isinstance(result, dict) or not isinstance(result.get("rows", []), list):
            raise DataError(f"{path}: expected a JSON object with a 'rows' list (as 'mcl eval' writes)")
        evaluation = Evaluation(path, result, path.stat().st_mtime, self.run.latest_weights_time(),
                                [int(s) for s in result.get("unfinished_stages", [])])
        for warning in evaluation.warnings():
            logger.warning("%s", warning)
        return evaluation

    def chance(self) -> dict[str, float]:
        """``attribute -> chance accuracy`` (1 / number of values), from eval.json or else the data set."""
        result = self.evaluation.result if self.evaluation else {}
        if result.get("attribute_classes"):
            return chance_levels(result)
        table, _ = self.table
        classes = {name: len(values) for name, values in table.attribute_values.items()} if table else None
        return chance_levels(result, classes)

    # ---- the data set and the models

    @cached_property
    def table(self) -> tuple[ImageTable | None, str]:
        """``(image table, "")``, or ``(None, why not)`` when the run's data set cannot be read (e.g. it moved)."""
        from mcl.data.resolve import load_table_for

        try:
            return load_table_for(self.config, progress=False), ""
        except DataError as exc:
            return None, f"the run's data set could not be read ({exc}); plots of features skipped"

    def member(self, name: str) -> nn.Module:
        """One trained member (``stage-2``, ``stage-0``), eval mode, loaded once."""
        from mcl.api import load_member

        if name not in self._members:
            self._members[name] = load_member(self.root, name, self.config)
        return self._members[name]

    def stage_members(self) -> list[str]:
        """``stage-0`` (when the run has one) then ``stage-1`` ... of the finished stages."""
        return (["stage-0"] if self.run.has_stage0() else []) + [f"stage-{s}" for s in self.finished]

    @cached_property
    def integrated(self) -> nn.Module:
        """Every finished stage (and stage 0) as the modality's one model, with ``embed(images, stages=)``."""
        stage0 = self.member("stage-0") if self.run.has_stage0() else None
        models = [self.member(f"stage-{s}") for s in self.finished]
        return self.modality.integrate(models, self.config, stage0).eval()

    def feature_representations(self) -> list[Representation]:
        """What the feature maps show: each stage alone, the last ``mcl-k`` (all stages), the last finetune-k."""
        of_stages = [r for r in self.representations if all(m.startswith("stage-") for m in r.members)]
        singles = [r for r in of_stages if len(r.members) == 1]
        integrated = [r for r in of_stages if r.name.startswith("mcl-")]
        finetune = [r for r in self.representations if member_number(r.name, FINETUNE) is not None]
        return singles + integrated[-1:] + finetune[-1:]

    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``representation -> (N, D)`` features of uint8 ``(N, H, W, 3)`` images (the integrated model's ``embed``).

        A finetune-k member is embedded as a one-stage model of the modality (as a stage alone is).
        """
        out = {}
        for representation in self.feature_representations():
            if member_number(representation.name, FINETUNE) is not None:
                alone = self.modality.integrate([self.member(representation.name)], self.config, None).eval()
                out[representation.name] = np.asarray(alone.embed(images))
                continue
            stages = [int(member.split("-", 1)[1]) for member in representation.members]
            out[representation.name] = np.asarray(self.integrated.embed(images, stages=stages))
        return out
