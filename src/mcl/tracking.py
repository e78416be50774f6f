"""Experiment trackers: where epoch metrics go besides ``metrics.jsonl`` (``--log tensorboard|mlflow|wandb``).

A tracker is an object with ``log(record)`` (one epoch record: ``stage``, ``epoch``, ``loss``, ``lr``,
``images_per_s``, ...) and ``close()``; :func:`open_tracker` opens one by name.
:func:`mcl.logging_utils.metrics_logging` opens the trackers named (several at once), registers them as
metric sinks for a ``with`` block, and closes them after it. Each library is imported only when its
tracker is asked for; a missing one is a one-line error naming the extra to install.

- ``tensorboard``: event files in ``RUN_DIR/tensorboard/`` (scalars ``<stage>/<metric>``, step = epoch);
- ``mlflow``: one MLflow run per ``mcl`` command, experiment ``mcl``, metrics ``<stage>/<metric>`` at
  step = epoch, the run config's keys as parameters; a local store in the run directory, the SQLite file
  ``RUN_DIR/mlflow.db`` (MLflow 3 refuses new file stores), unless ``MLFLOW_TRACKING_URI`` says where
  (``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db`` shows it);
- ``wandb``: one Weights & Biases run in project ``mcl`` (``WANDB_PROJECT`` overrides), files under
  ``RUN_DIR/wandb``, the run config as its config; ``WANDB_MODE=offline`` logs locally
  (``wandb sync`` uploads later).

Example:
    >>> tracker = open_tracker("mlflow", Path("runs/demo"))
    >>> tracker.log({"stage": "stage-1", "epoch": 1, "loss": 2.3})
    >>> tracker.close()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from mcl.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb")  # the --log choices
# What the trackers write into the run directory (wandb creates RUN_DIR/wandb itself, from dir=RUN_DIR).
TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, WANDB_DIR = "tensorboard", "mlflow.db", "mlartifacts", "wandb"
RUN_DIR_ENTRIES = (TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, WANDB_DIR)

SCALARS = ("loss", "lr", "images_per_s", "seconds")


class Tracker(Protocol):
    """What :func:`metrics_logging` drives."""

    def log(self, record: dict[str, Any]) -> None:
        """Record one epoch's metrics."""

    def close(self) -> None:
        """Flush and finish."""


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """``{"<stage>/<metric>": value}`` of the record's numeric metrics."""
    return {f"{record['stage']}/{key}": float(record[key]) for key in SCALARS
            if isinstance(record.get(key), (int, float))}


def _missing(kind: str, extra: str) -> ConfigError:
    return ConfigError(f"--log {kind}: the '{kind}' package is not installed; pip install 'mcl[{extra}]' "
                       "or leave out --log")


def _flat_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config as ``{"train.lr": 0.002, ...}`` (empty when none is written yet)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    flat: dict[str, Any] = {}
    for key, value in (yaml.safe_load(path.read_text()) or {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


class TensorBoardTracker:
    """Scalars ``<stage>/loss``, ``<stage>/lr``, ... per epoch in ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, record: dict[str, Any]) -> None:
        """Write the record's scalars at step = epoch."""
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, int(record["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class MLflowTracker:
    """One MLflow run (experiment ``mcl``) with the epoch metrics and the run config as parameters."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "tracking") from None
        self.run_dir = run_dir
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:  # a local store inside the run directory: nothing written outside it
            run_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
            artifacts = (run_dir / MLFLOW_ARTIFACTS).resolve().as_uri()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name("mcl")
            experiment_id = experiment.experiment_id if experiment else \
                self.client.create_experiment("mcl", artifact_location=artifacts)
        except Exception as exc:  # MLflow's own errors (unreachable server, bad URI): one line instead
            message = " ".join(str(exc).split())[:300]
            raise ConfigError(f"--log mlflow: cannot open the tracking store {uri} ({type(exc).__name__}: "
                              f"{message})") from None
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.resolve().name,
                                             tags={"mcl.run_dir": str(run_dir.resolve())}).info.run_id
        self.params_logged = False

    def log(self, record: dict[str, Any]) -> None:
        """Log the record's metrics at step = epoch (and the config's keys once it is written)."""
        if not self.params_logged:
            self._log_params()
        for key, value in _scalars(record).items():
            self.client.log_metric(self.run_id, key, value, step=int(record["epoch"]))

    def _log_params(self) -> None:
        params = _flat_config(self.run_dir)
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])
        self.params_logged = bool(params)

    def close(self) -> None:
        """Mark the run finished."""
        if not self.params_logged:
            self._log_params()
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """One Weights & Biases run (project ``mcl``); ``WANDB_MODE=offline`` keeps it on disk."""

    def __init__(self, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "tracking") from None
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mcl"), dir=str(run_dir),
                                  name=run_dir.resolve().name, config=_flat_config(run_dir), reinit="create_new")
        except Exception as exc:  # wandb raises its own errors (no API key, no network): one line instead
            message = " ".join(str(exc).split())[:300]
            raise ConfigError(f"--log wandb: wandb.init failed ({type(exc).__name__}: {message}); set "
                              "WANDB_MODE=offline to log locally, or log in with 'wandb login'") from None
        self.step = 0
        self.config_logged = bool(_flat_config(run_dir))
        self.run_dir = run_dir

    def log(self, record: dict[str, Any]) -> None:
        """Log the record's metrics (wandb's step counts epochs over all stages)."""
        if not self.config_logged:
            config = _flat_config(self.run_dir)
            if config:
                self.run.config.update(config, allow_val_change=True)
                self.config_logged = True
        self.run.log({**_scalars(record), "epoch": int(record["epoch"])}, step=self.step)
        self.step += 1

    def close(self) -> None:
        """Finish the run (offline: its files are complete under ``RUN_DIR/wandb``)."""
        self.run.finish()


def open_tracker(kind: str, run_dir: Path) -> Tracker:
    """The tracker named ``kind`` (one of :data:`TRACKERS`) for ``run_dir``."""
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir / TENSORBOARD_DIR)
    if kind == "mlflow":
        return MLflowTracker(run_dir)
    if kind == "wandb":
        return WandbTracker(run_dir)
    raise ConfigError(f"--log {kind!r}: expected one of {', '.join(TRACKERS)}")
