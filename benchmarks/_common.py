"""Shared helpers of the benchmark scripts: options, thread limits, interleaved timing, tables.

Every benchmark measures the things it compares *interleaved* (A, B, A, B, ...) in one process and
reports medians and their ratio, so a machine shared with other jobs slows both sides alike.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install


def parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark accepts."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    result.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="intra-op threads for torch, BLAS/OpenMP, scikit-learn and faiss (default: all cores)")
    result.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default per benchmark)")
    result.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    return result


def limit_threads(threads: int) -> None:
    """Give every library the same number of threads (torch, OpenMP/BLAS via threadpoolctl, faiss)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def synchronize(device: str) -> None:
    """Wait for queued device work (timings on CUDA are otherwise meaningless)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function: Callable[[], object], device: str = "cpu") -> float:
    """Wall seconds of one call."""
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, device: str = "cpu",
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every call, candidates alternating round by round (after ``warmup`` untimed rounds)."""
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, function in candidates.items():
            elapsed = timed(function, device)
            if round_index >= warmup:
                seconds[name].append(elapsed)
    return seconds


def median(values: list[float]) -> float:
    """Median (robust to the odd slow round on a shared machine)."""
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """Interquartile range relative to the median: how noisy the rounds were."""
    if len(values) < 4:
        return float("nan")
    low, _, high = statistics.quantiles(values, n=4)
    return (high - low) / statistics.median(values)


def machine() -> str:
    """One line describing where the numbers came from."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    model = _cpu_model() or cpu
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({model}), {device}, torch {torch.__version__}, Python "
            f"{platform.python_version()}, load average {load:.1f} at start")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def table(header: list[str], rows: list[list[object]], *, with_header: bool = True) -> str:
    """A Markdown table (pasted as is into benchmarks/README.md); only its rows if not ``with_header``."""
    def cell(value: object) -> str:
        if not isinstance(value, float):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] if with_header else []
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_rss_reset() -> bool:
    """Return freed heap to the OS, then reset this process's peak RSS; False where that is not possible.

    Without the trim, memory that an earlier phase freed but glibc kept would hide a later phase's
    allocations (they reuse it without growing the RSS).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``, ...) in MiB; None where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident memory in MiB (NaN where /proc is not available)."""
    current = _status_mib("VmRSS")
    return float("nan") if current is None else current


def peak_rss_mb() -> float:
    """Peak resident memory since the last :func:`peak_rss_reset` (else since start), in MiB."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def endless(sampler: Iterable) -> Iterator:
    """Batches of a batch sampler epoch after epoch (``set_epoch`` reshuffles each epoch, as in training)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


class _OneBatch:
    """A batch sampler of one fixed batch: lets the task's own loader build that batch."""

    def __init__(self, indices) -> None:
        self.indices = indices

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle."""

    def __iter__(self):
        return iter([self.indices])

    def __len__(self) -> int:
        return 1


def task_batch(task, indices) -> dict:
    """The batch ``{"index", "image", ...}`` the task's loader gives for ``indices`` (as the trainer sees it)."""
    return next(iter(task.loader(_OneBatch(indices))))


def train_step(task, model, optimizer, indices, pseudo_labels=None) -> None:
    """One training step as ``mcl.training`` does it: labels -> ``task.loss`` (augment, forward, loss) ->
    backward -> optimizer step. ``pseudo_labels`` is a tensor on the task's device, or None for SimCLR."""

    batch = task_batch(task, indices)
    batch_labels = None if pseudo_labels is None else pseudo_labels[batch["index"]]
    loss = task.loss(model, batch, batch_labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
