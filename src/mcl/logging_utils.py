"""Where epoch metrics go besides ``metrics.jsonl``; progress bars (on a terminal only) and phase timings.

Progress bars are drawn only when stderr is a terminal: a log file or CI output gets one line per
phase instead of thousands of carriage returns. Every :func:`phase` (and :func:`timed_phase`) records its
duration, less the phases nested in it, in :data:`PHASE_TIMES`, so a command can print where its time went
and the rows add up to the wall time.

``metrics.jsonl`` (one line per epoch, rewritten atomically) is always written by
:mod:`mcl.training`; every record is also handed to the sinks registered here. ``mcl train --log
tensorboard`` registers :class:`TensorBoardSink`, which writes event files to ``RUN_DIR/tensorboard/``
(TensorBoard's own append-only format, the one file type not written atomically; its reader skips a
torn last record). The ``tensorboard`` package is imported only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mcl import faults
from mcl.errors import ConfigError

logger = logging.getLogger("mcl")

MetricsSink = Callable[[dict[str, Any]], None]
LOGGERS = ("tensorboard",)
_SINKS: list[MetricsSink] = []
# (label, seconds) of every finished phase in this process, in order.
PHASE_TIMES: list[tuple[str, float]] = []


def progress_bar(iterable: Iterable, desc: str, enabled: bool = True, total: int | None = None) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` and stderr is a terminal; else unchanged."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, total=total)


# Seconds recorded so far inside each open timed_phase, innermost last.
_NESTED: list[float] = []


def record_time(label: str, seconds: float) -> None:
    """Add one phase's duration to :data:`PHASE_TIMES` (and to the enclosing :func:`timed_phase`'s nested time)."""
    PHASE_TIMES.append((label, seconds))
    if _NESTED:
        _NESTED[-1] += seconds


@contextlib.contextmanager
def timed_phase(label: str) -> Iterator[None]:
    """Record the enclosed code's time as phase ``label``, less the phases recorded inside it.

    So the phase table adds up to the wall time: e.g. the locked-feature cache built inside stage 0's
    embedding pass is its own row, not also part of ``stage-0 embed``. Nothing is recorded on an exception.
    """
    _NESTED.append(0.0)
    started = time.perf_counter()
    try:
        yield
    finally:
        nested = _NESTED.pop()
    elapsed = time.perf_counter() - started
    PHASE_TIMES.append((label, elapsed - nested))
    if _NESTED:
        _NESTED[-1] += elapsed


def emit_metrics(record: dict[str, Any]) -> None:
    """Hand one epoch record (``stage``, ``epoch``, ``loss``, ``lr``, ...) to every registered sink."""
    for sink in list(_SINKS):
        sink(record)


@contextlib.contextmanager
def metrics_sink(sink: MetricsSink) -> Iterator[None]:
    """Register ``sink`` for the duration of the ``with`` block."""
    _SINKS.append(sink)
    try:
        yield
    finally:
        _SINKS.remove(sink)


class TensorBoardSink:
    """Scalars ``<stage>/loss``, ``<stage>/lr``, ``<stage>/images_per_s`` per epoch."""

    SCALARS = ("loss", "lr", "images_per_s")

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard: the 'tensorboard' package is not installed; "
                              "pip install 'mcl[tensorboard]' or leave out --log") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, record: dict[str, Any]) -> None:
        """Write the record's scalars at step = epoch."""
        for key in self.SCALARS:
            if key in record:
                self.writer.add_scalar(f"{record['stage']}/{key}", record[key], int(record["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


@contextlib.contextmanager
def metrics_logging(kinds: list[str], run_dir: Path) -> Iterator[None]:
    """Route epoch metrics to the loggers named in ``kinds`` (each one of :data:`LOGGERS`) meanwhile."""
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys(kinds):
            if kind != "tensorboard":
                raise ConfigError(f"--log {kind!r}: expected one of {', '.join(LOGGERS)}")
            sink = TensorBoardSink(run_dir / "tensorboard")
            stack.callback(sink.close)
            stack.enter_context(metrics_sink(sink))
        yield


@contextlib.contextmanager
def phase(stage: str, name: str, description: str) -> Iterator[None]:
    """Log the start and duration of a phase without a progress bar (embedding, k-means).

    ``name`` is also the fault-injection moment the phase reaches when it finishes (:mod:`mcl.faults`).
    """
    logger.info("%s: %s ...", stage, description)
    started = time.perf_counter()
    with timed_phase(f"{stage} {name}"):
        yield
    logger.info("%s: %s done in %.1f s", stage, name, time.perf_counter() - started)
    faults.reached(name)
