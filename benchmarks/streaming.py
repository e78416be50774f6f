"""Streaming (``data.residency=stream``) vs in-memory images: peak memory against N, and training throughput.

1. **Memory flat in N.** ``mcl train`` (the demo config at 64 px, ``mcl.stages=2``, the same
   ``train.max_steps``, so every stage still embeds and clusters *every* training image) runs as a
   subprocess on a generated JPEG image table of ``small`` and of ``large`` images, once streamed
   and once in memory. A poller reads ``/proc`` every 0.2 s for the whole process tree (the trainer
   and its DataLoader workers) and keeps the peaks of: the trainer's own RSS (``VmHWM``), the tree's
   summed PSS (``/proc/PID/smaps_rollup``: shared pages split between the processes sharing them,
   so forked workers are not double counted) and the tree's summed RSS (an upper bound). The
   table shows each peak and the ratio ``large / small`` per residency (target for stream: <= 1.2).
2. **Throughput.** In one process, on the small set: training steps (augment, forward of both
   views, NT-Xent, backward, AdamW: what ``mcl.training`` does per batch) fed from the resident
   set and from the streamed set with 0, 1 and 2 DataLoader workers. Variants run in blocks of
   ``--steps`` timed steps (a fresh loader per block, its first step untimed: worker start-up),
   blocks alternating round by round; images/s from the median step and the ratio vs memory
   (target >= 0.8). Beside it the loaders alone (no model): how fast each can deliver batches.

Data sets are generated once under ``--data-dir`` (``mcl generate trifeature --format jpeg``) and
reused. Example (what the README's tables ran; on 2 shared cores the large set's two embedding passes
dominate: ~8 min for 3k vs 30k, ~25 min for 3k vs 100k, ~4 min for the throughput part)::

    python benchmarks/streaming.py --sizes 3000,100000 --max-steps 2 --skip throughput
    python benchmarks/streaming.py --sizes 3000,30000 --skip memory --steps 3 --repeats 2
    python benchmarks/streaming.py --quick          # 1000 vs 5000 images, smoke run
    python benchmarks/streaming.py --sizes 30000,300000 --replicate --max-steps 2 --skip throughput \
        --set model.width=0.125                     # 300k vs 30k: 10 hard-linked replicas, a narrow model
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import machine, median, parser, spread, table

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "mcl" / "configs" / "demo.yaml"
IMAGE_SIZE = 64


def mcl_command() -> list[str]:
    """The ``mcl`` CLI of this interpreter (the venv's console script, else ``python -m mcl``)."""
    script = Path(sys.executable).with_name("mcl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcl"]


def generate(data_dir: Path, size: int, n_test: int) -> tuple[Path, float | None]:
    """A 64-px JPEG trifeature image table of ``size`` training images (reused if present); seconds taken."""
    target = data_dir / f"jpeg-{size}"
    if (target / "labels.csv").exists():
        return target, None
    started = time.perf_counter()
    subprocess.run([*mcl_command(), "generate", "trifeature", "--out", str(target), "--n-train", str(size),
                    "--n-test", str(n_test), "--image-size", str(IMAGE_SIZE), "--format", "jpeg", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return target, time.perf_counter() - started


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and ')'
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _kib(path: str, field: str) -> int:
    """A ``field: N kB`` line of a /proc file, in KiB (0 once the process is gone)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Polls a process tree's memory until stopped; peaks in MiB."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.main_hwm = self.tree_pss = self.tree_rss = 0.0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = _children()
            pids, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += tree.get(pid, [])
            pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids) / 1024
            rss = sum(_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids) / 1024
            self.main_hwm = max(self.main_hwm, _kib(f"/proc/{self.pid}/status", "VmHWM") / 1024)
            self.tree_pss, self.tree_rss = max(self.tree_pss, pss), max(self.tree_rss, rss)
            self.max_processes = max(self.max_processes, len(pids))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


PHASES = {"train s": r"trained in ([\d.]+) s", "embed s": r"embed done in ([\d.]+) s",
          "k-means s": r"cluster done in ([\d.]+) s"}


def replicate(source: Path, factor: int, target: Path) -> Path:
    """``source``'s table with every training row repeated ``factor`` times, as hard links (reused if present).

    For the memory runs only: peak memory depends on the number of files, rows and embeddings, not on
    whether their pixels differ, and generating 300k JPEGs takes ~15 min here; hard links make each
    replica a distinct path (decoded, embedded and clustered like any other image) in seconds.
    """
    if (target / "labels.csv").exists():
        return target
    lines = (source / "labels.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    shutil.rmtree(target, ignore_errors=True)
    out = [header]
    for replica in range(factor):
        folder = target / f"r{replica}"
        folder.mkdir(parents=True)
        for row in rows:
            path, split, rest = row.split(",", 2)
            if split != "train" and replica:
                continue  # the test split once
            link = folder / Path(path).name
            os.link(source / path, link)
            out.append(f"{link.relative_to(target)},{split},{rest}")
    partial = target / "labels.csv.partial"
    partial.write_text("\n".join(out) + "\n")
    partial.rename(target / "labels.csv")
    return target


def train_run(data: Path, out: Path, residency: str, max_steps: int, workers: int,
              overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """One ``mcl train`` subprocess under the memory poller: peaks (MiB), wall and phase seconds (both stages)."""
    shutil.rmtree(out, ignore_errors=True)
    log = out.with_suffix(".log")
    command = [*mcl_command(), "train", str(DEMO), "--data", str(data), "--out", str(out), "--quiet",
               "--set", f"data.image_size={IMAGE_SIZE}", "--set", f"data.residency={residency}",
               "--set", f"data.workers={workers}", "--set", f"train.max_steps={max_steps}",
               "--set", "mcl.stages=2", "--set", "eval.ensemble=false"]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        poller = TreeMemory(process.pid)
        code = process.wait()
        poller.stop()
    wall = time.perf_counter() - started
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"mcl train failed ({code}), see {log}:\n{text[-2000:]}")
    result = {"wall s": wall, "main peak RSS": poller.main_hwm, "tree peak PSS": poller.tree_pss,
              "tree peak RSS": poller.tree_rss, "processes": poller.max_processes}
    for name, pattern in PHASES.items():
        result[name] = sum(float(value) for value in re.findall(pattern, text))
    return result


def memory_table(sets: dict[int, Path], work: Path, max_steps: int, workers: int,
                 residencies: tuple[str, ...] = ("stream", "memory"), overrides: tuple[str, ...] = ()) -> str:
    """Part 1: peaks per residency and N, and the large/small ratios."""
    small, large = sorted(sets)
    results: dict[tuple[str, int], dict[str, float]] = {}
    for residency in residencies:
        for size in (small, large):
            results[residency, size] = train_run(sets[size], work / f"run-{residency}-{size}", residency,
                                                 max_steps, workers, overrides)
            print(f"# {residency} N={size}: {results[residency, size]}", flush=True)
    rows = []
    for residency in residencies:
        first, second = results[residency, small], results[residency, large]
        for size, result in ((small, first), (large, second)):
            rows.append([residency, f"{size:,}", result["main peak RSS"], result["tree peak PSS"],
                         result["tree peak RSS"], int(result["processes"]), result["embed s"], result["k-means s"],
                         result["wall s"]])
        rows.append([residency, "ratio", second["main peak RSS"] / first["main peak RSS"],
                     second["tree peak PSS"] / first["tree peak PSS"], second["tree peak RSS"] / first["tree peak RSS"],
                     "", second["embed s"] / first["embed s"], "", second["wall s"] / first["wall s"]])
    header = ["residency", "N", "trainer peak RSS MiB", "tree peak PSS MiB", "tree peak RSS MiB", "processes",
              "embed s (2 stages)", "k-means s", "wall s"]
    return table(header, rows)


def throughput_table(data: Path, batch_size: int, steps: int, rounds: int, threads: int) -> str:
    """Part 2: training-step and loader-only images/s, resident vs streamed with 0/1/2 workers."""
    import torch

    from mcl.config import load_config
    from mcl.data.resolve import load_table_for
    from mcl.sampling import RandomBatchSampler
    from mcl.tasks import ImageContrastiveTask
    from mcl.training import build_optimizer

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    base = load_config(DEMO, [f"data.image_size={IMAGE_SIZE}", f"data.path={data}", "data.source=table",
                              f"train.batch_size={batch_size}"])
    variants = {"memory": ("memory", 0), "stream, 0 workers": ("stream", 0), "stream, 1 worker": ("stream", 1),
                "stream, 2 workers": ("stream", 2)}
    tables = {}
    for residency in ("memory", "stream"):
        config = load_config(DEMO, [f"data.image_size={IMAGE_SIZE}", f"data.path={data}", "data.source=table",
                                    f"data.residency={residency}"])
        tables[residency] = load_table_for(config, progress=False).images
    tasks, models, optimizers = {}, {}, {}
    for name, (residency, workers) in variants.items():
        config = load_config(DEMO, [f"data.image_size={IMAGE_SIZE}", f"data.path={data}", "data.source=table",
                                    f"data.workers={workers}", f"train.batch_size={batch_size}"])
        tasks[name] = ImageContrastiveTask(config, tables[residency], device)
        models[name] = tasks[name].build_model(config.seed)
        optimizers[name] = build_optimizer(models[name].parameters(), base.train)

    def block(name: str, train: bool, count: int, epoch: int) -> list[float]:
        """Seconds of ``count`` steps (or bare batches) after one untimed one, on a fresh loader."""
        task, model, optimizer = tasks[name], models[name], optimizers[name]
        loader = task.loader(RandomBatchSampler(task.num_samples, batch_size, seed=0))
        loader.set_epoch(epoch)
        batches, seconds = iter(loader), []
        for index in range(count + 1):
            started = time.perf_counter()
            batch = next(batches)
            if train:
                loss = task.loss(model, batch, None)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if index:
                seconds.append(time.perf_counter() - started)
        del batches  # shuts the workers down before the next variant runs
        return seconds

    results: dict[tuple[str, bool], list[float]] = {}
    for train, count in ((False, 10), (True, steps)):
        for round_index in range(rounds):
            for name in variants:
                results.setdefault((name, train), []).extend(block(name, train, count, round_index))
    rows = []
    memory_rate = {train: batch_size / median(results["memory", train]) for train in (False, True)}
    for name in variants:
        step, bare = results[name, True], results[name, False]
        rows.append([name, batch_size / median(step), batch_size / median(step) / memory_rate[True], spread(step),
                     len(step), batch_size / median(bare), 1000 * median(bare)])
    header = ["images from", "train images/s", "ratio vs memory", "IQR/median", "steps timed",
              "loader-only images/s", "loader ms/batch"]
    return table(header, rows)


def main() -> None:
    """Generate the sets, then print both tables."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--sizes", default="30000,300000", help="small,large training-set sizes (default 30k,300k)")
    options.add_argument("--data-dir", default="/tmp/mcl-streaming-bench", help="where the sets are generated/reused")
    options.add_argument("--max-steps", type=int, default=20, help="train.max_steps of the memory runs")
    options.add_argument("--workers", type=int, default=2, help="data.workers of the memory runs")
    options.add_argument("--steps", type=int, default=3, help="timed training steps per block (throughput)")
    options.add_argument("--batch-size", type=int, default=256, help="batch size of the throughput loop")
    options.add_argument("--residencies", default="stream,memory", help="residencies of the memory runs")
    options.add_argument("--skip", choices=["memory", "throughput"], default=None, help="leave one part out")
    options.add_argument("--replicate", action="store_true",
                         help="make the large set from the small one's images as hard links (see replicate())")
    options.add_argument("--set", dest="overrides", action="append", default=[],
                         help="extra config override of the memory runs, e.g. model.width=0.125 (repeatable)")
    args = options.parse_args()
    small, large = (1000, 5000) if args.quick else sorted(int(part) for part in args.sizes.split(","))
    rounds = args.repeats or 2
    work = Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# streaming: {machine()}; uptime: {os.popen('uptime').read().strip()}", flush=True)
    sets = {}
    for size in (small, large):
        if args.replicate and size == large:
            if large % small:
                raise SystemExit("--replicate needs the large size to be a multiple of the small one")
            started = time.perf_counter()
            sets[size] = replicate(sets[small], large // small, work / f"jpeg-{small}x{large // small}")
            print(f"# set N={size}: {sets[size]} ({large // small} hard-linked replicas of the N={small} set, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)
            continue
        sets[size], seconds = generate(work, size, n_test=1000 if not args.quick else 200)
        print(f"# set N={size}: {sets[size]} ({'reused' if seconds is None else f'generated in {seconds:.0f} s'})",
              flush=True)
    parts: list[tuple[str, Callable[[], str]]] = [
        ("memory", lambda: memory_table(sets, work, 2 if args.quick else args.max_steps, args.workers,
                                        tuple(args.residencies.split(",")), tuple(args.overrides))),
        ("throughput", lambda: throughput_table(sets[small], 64 if args.quick else args.batch_size,
                                                2 if args.quick else args.steps, rounds, args.threads))]
    for name, part in parts:
        if name == args.skip:
            continue
        started = time.perf_counter()
        result = part()
        print(f"\n## {name} ({time.perf_counter() - started:.0f} s; uptime: {os.popen('uptime').read().strip()})")
        print(result, flush=True)


if __name__ == "__main__":
    main()
