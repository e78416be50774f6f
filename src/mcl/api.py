"""Python API: ``mcl.train(config) -> Run``, ``mcl.load(run_dir)``, ``mcl.evaluate(run_dir)``.

The run's modality (:func:`mcl.modalities.modality_of`) supplies what differs between unimodal and
image-text runs; :class:`mcl.run.RunDirectory` knows what a run directory holds.

Example:
    >>> run = mcl.train("configs/demo.yaml", out="runs/demo")
    >>> encoder = mcl.load("runs/demo")          # MultistageEncoder (or MultistageTwoTower), eval mode
    >>> result = mcl.evaluate("runs/demo")       # eval.json's content
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl import distributed
from mcl.config import Config, apply_overrides, check_config, config_from_dict, load_config, save_config
from mcl.data.resolve import data_identity, load_table_for, resolve_data
from mcl.errors import ConfigError, DataError, RunDirError
from mcl.evaluation.overrides import with_eval_overrides
from mcl.evaluation.stage_diagnostics import recorded_diagnostics
from mcl.files import write_json
from mcl.modalities import modality_of
from mcl.run import EVAL_FILE, RunDirectory
from mcl.stages import (
    StageHistory,
    planned_stages,
    run_stages,
    train_ensemble,
    train_finetune_baseline,
    trained_stages,
)
from mcl.tasks import load_model_weights
from mcl.training import Fit, resolve_device
from mcl.training import train as default_fit

logger = logging.getLogger("mcl")


@dataclass
class Run:
    """A finished (or resumed-to-the-end) training run."""

    run_dir: Path
    config: Config
    encoder: nn.Module  # MultistageEncoder or MultistageTwoTower
    history: StageHistory


def as_config(config: Config | dict[str, Any] | str | Path, overrides: list[str] | None = None) -> Config:
    """Accept a :class:`Config`, a nested dict, or a YAML path."""
    if isinstance(config, Config):
        if overrides:
            raise ConfigError("overrides apply to YAML or dict configs; edit the Config object instead")
        return check_config(config)
    if isinstance(config, dict):
        return config_from_dict(apply_overrides(dict(config), overrides or []))
    return load_config(config, overrides)


def _check_training_table(config: Config, table: Any) -> None:
    where = Path(config.data.path) / "labels.csv"
    if len(table) == 0:
        raise DataError(f"{where}: no rows with split=train to train on")
    if len(table) < config.mcl.clusters:
        raise ConfigError(f"config key 'mcl.clusters': {config.mcl.clusters} clusters but only {len(table)} "
                          "training images")
    if config.mcl.min_group_size > len(table) and config.mcl.stages > 1:
        message = (f"config key 'mcl.min_group_size': {config.mcl.min_group_size} is larger than the training set "
                   f"({len(table)} images): every pseudo-label group merges into one, so stages after the first "
                   "would train like the first")
        if not config.mcl.allow_single_group:  # found before stage 1 trains, not after it (mcl.group_checks)
            raise ConfigError(f"{message}; lower it or set mcl.allow_single_group: true")
        logger.warning("%s (allowed by mcl.allow_single_group)", message)
    if config.train.batch_size > len(table):
        raise ConfigError(f"config key 'train.batch_size': {config.train.batch_size} is larger than the "
                          f"training set ({len(table)} images)")


def train(config: Config | dict[str, Any] | str | Path, out: str | Path = "runs/mcl", data: str | Path | None = None,
          overrides: list[str] | None = None, progress: bool = True, fit: Fit = default_fit) -> Run:
    """Run (or resume) every stage of MCL and the ensemble baseline; returns the trained model.

    Re-running on an existing run directory continues where it stopped and recomputes nothing
    that finished. ``fit`` trains one stage (default :func:`mcl.training.train`; see
    :class:`mcl.training.Fit` to bring your own loop).
    """
    config = as_config(config, overrides)
    config, auto = planned_stages(config)  # mcl.stages: auto trains up to mcl.max_stages, deciding after each
    run_dir = Path(out)
    with RunDirectory(run_dir).writer():  # a second writer of this directory is refused until this one ends
        return _train(config, run_dir, data, progress, fit, auto)


def _train(config: Config, run_dir: Path, data: str | Path | None, progress: bool, fit: Fit, auto: bool) -> Run:
    config = resolve_data(config, run_dir, data, progress)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    full_table = load_table_for(config, progress, device)
    table = full_table.subset("train")
    _check_training_table(config, table)
    if len(full_table.subset("test")) == 0:
        logger.warning("%s: no rows with split=test; training goes ahead, but 'mcl eval' needs a test split",
                       Path(config.data.path) / "labels.csv")
    run = RunDirectory(run_dir)
    if distributed.is_main_process():
        run.start(config, *data_identity(config, len(table)))
        save_config(config, run.config_path)
    distributed.barrier()
    modality = modality_of(config)
    task = modality.task(config, table, device, run)
    stage0 = modality.initial_model(config, task)
    history = run_stages(task, config, run, progress, initial_model=stage0, fit=fit, auto=auto)
    config = trained_stages(config, run, history)
    if config.eval.ensemble:
        train_ensemble(task, config, run, progress, fit=fit)
    if config.eval.finetune_baseline:
        train_finetune_baseline(task, config, run, progress, fit=fit)
    return Run(run_dir, config, modality.integrate(history.models, config, stage0), history)


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was trained with."""
    return RunDirectory(run_dir).config()


def load_member(run_dir: str | Path, member: str, config: Config | None = None) -> nn.Module:
    """One trained model of a run (``stage-2``, ``ensemble-3``, ``stage-0``), checked against the manifest."""
    run = RunDirectory(run_dir)
    config = config or run.config()
    weights = run.weights(member)
    if not run.is_finished(weights):
        raise RunDirError(f"{weights}: not finished; resume training with 'mcl train' first")
    return load_model_weights(modality_of(config).untrained(config, run), weights).eval()


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained multistage model of a run (every finished stage), in eval mode.

    Unimodal runs give a :class:`~mcl.integration.MultistageEncoder`, image-text runs a
    :class:`~mcl.modalities.image_text.task.MultistageTwoTower` (with stage 0 when the run has one).
    """
    run = RunDirectory(run_dir)
    config = run.config()
    stages = run.finished_stages(config)
    if not stages:
        raise RunDirError(f"{run_dir}: no finished stage yet; run 'mcl train' first")
    models = [load_member(run_dir, f"stage-{s}", config) for s in stages]
    stage0 = load_member(run_dir, "stage-0", config) if run.has_stage0() else None
    return modality_of(config).integrate(models, config, stage0).to(device).eval()


def evaluate(run_dir: str | Path, data: str | Path | None = None, progress: bool = True,
             allow_unfinished: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Score every representation of a run on its test split; writes and returns ``eval.json``'s content.

    A run with unfinished stages is an error (its rows would pass for the finished run's) unless
    ``allow_unfinished``: then the finished stages are scored and ``eval.json`` says which are missing.
    ``overrides``: ``eval.KEY=VALUE`` settings for this evaluation only (:mod:`mcl.evaluation.overrides`).
    """
    run = RunDirectory(run_dir)
    config = run.config()
    if overrides:
        config = with_eval_overrides(config, overrides)
    unfinished = run.unfinished_stages(config)
    if unfinished and not allow_unfinished:
        names = ", ".join(f"stage-{s}" for s in unfinished)
        raise RunDirError(f"{run.root}: training has not finished ({names} not done); resume it with "
                          f"'mcl train --resume --out {run.root}', or pass --partial to score the finished stages")
    modality = modality_of(config)
    config = resolve_data(config, run.root, data, progress)
    table = load_table_for(config, progress)
    train_rows, test_rows = table.subset("train"), table.subset("test")
    where = Path(config.data.path) / "labels.csv"
    if len(test_rows) == 0:
        raise DataError(f"{config.data.path}: no test rows to score on (the data has no test split and "
                        f"data.test_fraction is {config.data.test_fraction}); set data.test_fraction > 0")
    if modality.needs_attributes and not table.attribute_names():
        raise DataError(f"{where}: no attribute columns to evaluate")
    rows = modality.evaluate(run, config, train_rows, test_rows, lambda member: load_member(run.root, member, config))
    result: dict[str, Any] = {"kind": modality.name, "data": config.data.path, "train_rows": len(train_rows),
                              "test_rows": len(test_rows), "rows": rows,
                              "attribute_classes": {a: len(v) for a, v in table.attribute_values.items()}}
    result["diagnostics"] = recorded_diagnostics(run, config, run.finished_stages(config))
    if overrides:
        result["eval_overrides"] = list(overrides)
    if unfinished:
        result["unfinished_stages"] = unfinished
        logger.warning("scored the finished stages only: stages %s are not trained yet", unfinished)
    write_json(run.root / EVAL_FILE, result)
    return result
