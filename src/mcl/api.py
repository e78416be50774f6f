"""Python API: ``mcl.train(config) -> Run`` and ``mcl.load(run_dir) -> MultistageEncoder``.

Multimodal runs (``multimodal.enabled``) train :class:`mcl.multimodal.ImageTextTask` on the same
stage loop and load as :class:`mcl.multimodal.MultistageTwoTower`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl import distributed
from mcl.config import WEB_SOURCES, Config, config_from_dict, load_config, save_config
from mcl.errors import ConfigError, DataError, RunDirError
from mcl.integration import MultistageEncoder
from mcl.io import sha256_file
from mcl.models import ContrastiveEncoder, build_encoder
from mcl.multimodal import ImageTextTask, MultistageTwoTower, load_run_two_tower
from mcl.rundir import RunDirectory
from mcl.stages import ENCODER_FILE, StageHistory, run_stages, train_ensemble
from mcl.tasks import ImageContrastiveTask, load_model_weights
from mcl.training import resolve_device

logger = logging.getLogger("mcl")


@dataclass
class Run:
    """A finished (or resumed-to-the-end) training run."""

    run_dir: Path
    config: Config
    encoder: MultistageEncoder | MultistageTwoTower
    history: StageHistory


def as_config(config: Config | dict[str, Any] | str | Path, overrides: list[str] | None = None) -> Config:
    """Accept a :class:`Config`, a nested dict, or a YAML path."""
    if isinstance(config, Config):
        if overrides:
            raise ConfigError("overrides apply to YAML or dict configs; edit the Config object instead")
        return config.validate()
    if isinstance(config, dict):
        from mcl.config import apply_overrides

        return config_from_dict(apply_overrides(dict(config), overrides or []))
    return load_config(config, overrides)


def resolve_data(config: Config, run_dir: Path, data_dir: str | Path | None = None, progress: bool = True) -> Config:
    """Fix ``data.path`` (generating the data set if needed) and return the updated config.

    ``data_dir`` overrides the config's data set with an image-table directory.
    """
    from mcl.data import GENERATORS

    data = config.data
    if data_dir is not None:
        data = replace(data, source="table", path=str(Path(data_dir).resolve()))
    if data.source == "table":
        if data.path is None:
            raise ConfigError("config key 'data.path': required when data.source is 'table' (or pass --data DIR)")
        return replace(config, data=data)
    if data.source in WEB_SOURCES:
        return _import_image_text(config, run_dir, progress)
    target = Path(data.path) if data.path else run_dir / "data"
    # Only captioned Trifeature takes caption options; the other generators have none.
    options = {"drop_prob": config.multimodal.caption_drop_prob} if data.source == "captioned-trifeature" else {}
    _write_table_once(target, f"generating the {data.source} data set in {target}", lambda: GENERATORS[data.source](
        target, n_train=data.n_train, n_test=data.n_test, image_size=data.image_size, seed=data.seed,
        progress=progress, **options))
    return replace(config, data=replace(data, path=str(target.resolve())))


def _write_table_once(target: Path, message: str, write: Callable[[], object]) -> None:
    """Run ``write`` (which creates the image table ``target``) on rank 0 unless the table exists; all wait."""
    if not (target / "labels.csv").exists() and distributed.is_main_process():
        logger.info("%s", message)
        write()
    distributed.barrier()


def _import_image_text(config: Config, run_dir: Path, progress: bool) -> Config:
    """img2dataset/WebDataset pairs, imported once into ``RUN_DIR/data``; the config then points at that table."""
    from mcl.data.captions import import_image_text

    data = config.data
    target = run_dir / "data"
    _write_table_once(target, f"importing {data.source} pairs from {data.path} into {target}",
                      lambda: import_image_text(data.source, data.path, target, data.n_train, data.n_test,
                                                data.image_size, data.on_bad_image, progress))
    return replace(config, data=replace(data, source="table", path=str(target.resolve())))


def load_table_for(config: Config, progress: bool = True):
    """The image table a (resolved) config points to."""
    from mcl.data import load_table

    data = config.data
    return load_table(data.path, image_size=data.image_size, on_bad_image=data.on_bad_image, cache=data.cache,
                      progress=progress)


def data_fingerprint(config: Config, train_rows: int) -> dict[str, Any]:
    """Identity of the training data (row count and labels.csv checksum) for resume checks."""
    labels = Path(config.data.path) / "labels.csv"
    return {"train_rows": train_rows, "labels_sha256": sha256_file(labels)[:16]}


def train(config: Config | dict[str, Any] | str | Path, out: str | Path = "runs/mcl", data: str | Path | None = None,
          overrides: list[str] | None = None, progress: bool = True) -> Run:
    """Run (or resume) every stage of MCL and the ensemble baseline; returns the trained encoder.

    Re-running on an existing run directory continues where it stopped and recomputes nothing
    that finished.
    """
    config = as_config(config, overrides)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_data(config, run_dir, data, progress)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    table = load_table_for(config, progress).subset("train")
    if len(table) == 0:
        raise DataError(f"{Path(config.data.path) / 'labels.csv'}: no rows with split=train to train on")
    if len(table) < config.mcl.clusters:
        raise ConfigError(f"config key 'mcl.clusters': {config.mcl.clusters} clusters but only {len(table)} "
                          "training images")
    if config.train.batch_size > len(table):
        raise ConfigError(f"config key 'train.batch_size': {config.train.batch_size} is larger than the "
                          f"training set ({len(table)} images)")
    run = RunDirectory(run_dir)
    if distributed.is_main_process():
        run.start(config, data_fingerprint(config, len(table)))
        save_config(config, run_dir / "config.yaml")
    distributed.barrier()
    device = resolve_device(config.train.device)
    if config.multimodal.enabled:
        task = ImageTextTask(config, table, device, run)
        stage0 = task.initial if config.multimodal.stage0 else None
    else:
        task, stage0 = ImageContrastiveTask(config, table.images, device), None
    history = run_stages(task, config, run, progress, initial_model=stage0)
    if config.eval.ensemble:
        train_ensemble(task, config, run, progress)
    return Run(run_dir, config, multistage_model(history.models, config, stage0), history)


def multistage_model(models: list[nn.Module], config: Config,
                     stage0: nn.Module | None = None) -> MultistageEncoder | MultistageTwoTower:
    """The stage models integrated as the run's config says (two towers for multimodal runs)."""
    if config.multimodal.enabled:
        return MultistageTwoTower(models, config.mcl.integration, stage0, config.multimodal.integrate_stage0)
    return MultistageEncoder(models, config.mcl.integration)


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was trained with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml); train one with 'mcl train'")
    return load_config(path)


def build_stage_encoder(config: Config) -> ContrastiveEncoder:
    """An untrained encoder of the run's architecture."""
    model = config.model
    return build_encoder(model.backbone, model.width, model.projection_dim, model.hidden_dim)


def load_member(run_dir: str | Path, directory: str,
                config: Config | None = None) -> ContrastiveEncoder | MultistageTwoTower:
    """One trained model of a run (``stage-2``, ``ensemble-3``, ...), checked against the manifest.

    A multimodal run's members are two-tower models (``stage-0`` too, when it has one).
    """
    config = config or read_run_config(run_dir)
    run = RunDirectory(run_dir)
    weights = run.root / directory / ENCODER_FILE
    if not run.is_finished(weights):
        raise RunDirError(f"{weights}: not finished; resume training with 'mcl train' first")
    model = load_run_two_tower(config, run_dir) if config.multimodal.enabled else build_stage_encoder(config)
    return load_model_weights(model, weights).eval()


def _leading_finished(paths: list[Path], run: RunDirectory) -> int:
    """How many of ``paths``, from the first on, are recorded as finished."""
    count = 0
    for path in paths:
        if not run.is_finished(path):
            break
        count += 1
    return count


def finished_stages(run_dir: str | Path, config: Config) -> int:
    """How many leading stages of a run have final weights."""
    run = RunDirectory(run_dir)
    return _leading_finished([run.stage_dir(s) / ENCODER_FILE for s in range(1, config.mcl.stages + 1)], run)


def finished_stage_numbers(run_dir: str | Path, config: Config) -> list[int]:
    """Every stage (1-based) whose final weights are recorded, gaps included."""
    run = RunDirectory(run_dir)
    return [s for s in range(1, config.mcl.stages + 1) if run.is_finished(run.stage_dir(s) / ENCODER_FILE)]


def finished_ensemble_members(run_dir: str | Path, config: Config) -> int:
    """How many extra ``ensemble-k`` members (k = 2, 3, ...) are finished, counted from k = 2 on."""
    run = RunDirectory(run_dir)
    return _leading_finished([run.ensemble_dir(k) / ENCODER_FILE for k in range(2, config.mcl.stages + 1)], run)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> MultistageEncoder | MultistageTwoTower:
    """The trained multistage model of a run (every finished stage), in eval mode.

    Multimodal runs give a :class:`MultistageTwoTower` (with stage 0 when the run has one).
    """
    config = read_run_config(run_dir)
    stages = finished_stages(run_dir, config)
    if stages == 0:
        raise RunDirError(f"{run_dir}: no finished stage yet; run 'mcl train' first")
    encoders = [load_member(run_dir, f"stage-{s}", config) for s in range(1, stages + 1)]
    has_stage0 = config.multimodal.enabled and config.multimodal.stage0
    stage0 = load_member(run_dir, "stage-0", config) if has_stage0 else None
    return multistage_model(encoders, config, stage0).to(device).eval()
