"""Logging of the ``mcl`` logger, progress bars, phase timings, and where epoch metrics go.

Python API users see INFO lines on stderr by default (one or two per phase: "stage-2: k-means, K=10 ...",
"... done in 1.2 s"): until the application configures logging itself (any handler on the root logger),
a default handler prints the ``mcl`` logger's records as ``[mcl] message``; after that the records simply
propagate to the application's handlers. :func:`configure_logging` changes the level (``WARNING``
silences mcl). The CLI installs its own handler (:func:`mcl.cli.common.setup_logging`).

Progress bars are drawn only when stderr is a terminal or in a Jupyter notebook (``tqdm.auto``: widgets
there): a log file or CI output gets one line per phase instead of thousands of carriage returns. Every
:func:`phase` (and :func:`timed_phase`) records its duration, less the phases nested in it, in
:data:`PHASE_TIMES`, so a command can print where its time went and the rows add up to the wall time.
``metrics.jsonl`` (one line per epoch, rewritten atomically) is always written by :mod:`mcl.training`; every
record is also handed to the sinks registered here. ``mcl train --log tensorboard|mlflow|wandb`` registers the
trackers of :mod:`mcl.tracking` (TensorBoard's event files are its own append-only format, the one file type
not written atomically; its reader skips a torn last record). Each tracking library is imported only when
asked for.
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
from mcl.tracking import TRACKERS, open_tracker

logger = logging.getLogger("mcl")

MetricsSink = Callable[[dict[str, Any]], None]
LOGGERS = TRACKERS  # the --log choices
LOG_FORMAT = "[mcl] %(message)s"
_SINKS: list[MetricsSink] = []
# (label, seconds) of every finished phase in this process, in order.
PHASE_TIMES: list[tuple[str, float]] = []


class _DefaultHandler(logging.StreamHandler):
    """stderr (looked up at each record, so a redirected stderr is honoured) until the application
    configures logging: once the root logger has a handler, records reach it by propagation instead."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record unless the root logger handles it."""
        if logging.getLogger().handlers:
            return
        self.setStream(sys.stderr)
        super().emit(record)


def _install_default_logging() -> None:
    """INFO to stderr for the ``mcl`` logger, unless it already has a handler or a level."""
    if not logger.handlers:
        handler = _DefaultHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def configure_logging(level: int | str = logging.INFO) -> None:
    """Set the level of mcl's log lines (``"WARNING"`` keeps only warnings; ``"DEBUG"`` shows more)."""
    logger.setLevel(level.upper() if isinstance(level, str) else level)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is no terminal but ``tqdm.auto`` draws widgets)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # IPython half imported, or too old to have get_ipython at the top level
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable: Iterable, desc: str, enabled: bool = True, total: int | None = None) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` and stderr is a terminal (or in a notebook)."""
    if not (enabled and (sys.stderr.isatty() or in_notebook())):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, total=total)


_install_default_logging()

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


@contextlib.contextmanager
def metrics_logging(kinds: list[str], run_dir: Path) -> Iterator[None]:
    """Send every epoch record to the trackers named in ``kinds`` (:data:`LOGGERS`) meanwhile; close them after."""
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys(kinds):
            tracker = open_tracker(kind, Path(run_dir))
            stack.callback(tracker.close)
            stack.enter_context(metrics_sink(tracker.log))
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
