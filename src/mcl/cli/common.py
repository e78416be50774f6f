"""What every ``mcl`` command shares: the config directory, common options, logging, phase timings.

One definition each of :data:`CONFIG_DIR` (the shipped configs, usable by name: :func:`resolve_config`),
``--quiet`` (:func:`add_quiet`), ``--set``
(:func:`add_set`) and ``--log`` (:func:`add_log`). :func:`setup_logging` sends the ``mcl`` logger
to stderr as ``[mcl] message``; under ``torchrun`` (``RANK`` > 0) a rank logs warnings and errors
only, so a run on 8 GPUs reads like a run on one. :func:`format_phase_times` turns
:data:`mcl.logging_utils.PHASE_TIMES` into the table ``mcl demo`` ends with.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mcl.logging_utils import LOG_FORMAT, LOGGERS

logger = logging.getLogger("mcl")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # the configs shipped inside the package


def shipped_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name (``demo`` -> ``.../mcl/configs/demo.yaml``)."""
    return {path.stem: path for path in sorted(CONFIG_DIR.glob("*.yaml"))}


def resolve_config(name_or_path: str) -> str:
    """A config file to load: ``name_or_path`` if it exists, else the shipped config of that name.

    ``demo``, ``demo.yaml`` and ``configs/demo.yaml`` name the shipped ``demo`` config from any directory
    (a file of that path in the current directory wins). Anything else is a one-line error listing the names.
    """
    from mcl.errors import ConfigError

    path = Path(name_or_path)
    if path.exists():
        return name_or_path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and (path.parent == Path(".") or path.parent.name == "configs"):
        return str(shipped[name])
    raise ConfigError(f"{name_or_path}: config file not found; shipped configs (usable by name): "
                      f"{', '.join(shipped)} (see 'mcl configs')")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars (bars are drawn only on a terminal anyway)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars (drawn only on a terminal anyway)")


def add_set(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): config overrides, e.g. ``--set train.epochs=2``."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.epochs=2 (repeatable)")


def add_log(parser: argparse.ArgumentParser) -> None:
    """``--log tensorboard|mlflow|wandb`` (repeatable): trackers besides ``metrics.jsonl`` (:mod:`mcl.tracking`)."""
    parser.add_argument("--log", action="append", default=[], choices=LOGGERS,
                        help="also send epoch metrics to a tracker (repeatable): tensorboard (RUN_DIR/tensorboard), "
                             "mlflow (RUN_DIR/mlflow.db unless MLFLOW_TRACKING_URI is set), wandb (WANDB_MODE=offline "
                             "logs locally); metrics.jsonl is always written")


class RankFilter(logging.Filter):
    """Let every record through on rank 0; on other ranks only WARNING and above."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        """True if the record is logged."""
        return self.rank == 0 or record.levelno >= logging.WARNING


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank under torchrun (``RANK``), 0 when not distributed or unreadable."""
    value = (os.environ if environ is None else environ).get("RANK", "0")
    try:
        return int(value)
    except ValueError:
        return 0


def setup_logging(verbose: bool = False) -> None:
    """``mcl`` logger -> stderr (DEBUG with ``verbose``, else INFO); ranks > 0 log warnings only."""
    rank = process_rank()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT if rank == 0 else f"[mcl rank {rank}] %(message)s"))
    handler.addFilter(RankFilter(rank))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def init_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    from mcl import distributed

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def format_phase_times(times: Sequence[tuple[str, float]], total: float) -> str:
    """A table of ``(label, seconds)`` phases, the time outside them (``other``) and the ``total``.

    >>> print(format_phase_times([("stage-1 train", 12.0)], 13.5))
    time per phase:
      stage-1 train    12.0 s
      other             1.5 s
      total            13.5 s
    """
    other = max(0.0, total - sum(seconds for _, seconds in times))
    rows = [*times, ("other", other), ("total", total)]
    width = max(len(label) for label, _ in rows) + 2
    lines = ["time per phase:"] + [f"  {label:<{width}}{seconds:6.1f} s" for label, seconds in rows]
    return "\n".join(lines)
