"""``mcl demo [--multimodal]``: generate a data set, train MCL, evaluate, write the report, print where time went.

``mcl demo`` trains ``configs/demo.yaml`` (Trifeature, small ConvNet) into ``runs/demo``;
``mcl demo --multimodal`` trains ``configs/multimodal.yaml`` (the paper's recipe: fine-tune the aligned
stage 0 on captioned Trifeature with a corner mark, beside the ``finetune-k`` baseline; needs
``pip install 'mcl[pretrained,text]'``) into ``runs/demo-multimodal``. Both print the run's tables, the
demo's headline comparisons (unimodal: stage 1 versus the integrated model; multimodal: stage 0 and
plain fine-tuning versus MCL), and a table of the time each phase took: data generation, every stage's
training / embedding / k-means (:data:`mcl.logging_utils.PHASE_TIMES`), evaluation and the report, then
the total.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mcl.cli.common import CONFIG_DIR, add_log, add_quiet, add_set, format_phase_times
from mcl.run import EVAL_FILE

T = TypeVar("T")


@dataclass(frozen=True)
class Demo:
    """One demo: its shipped config, default run directory and its comparison lines.

    ``comparisons``: ``(probe, first, second)`` representations, ``{k}`` standing for the number of stages.
    """

    config: Path
    out: str
    comparisons: tuple[tuple[str, str, str], ...]


DEMO = Demo(CONFIG_DIR / "demo.yaml", "runs/demo", (("linear", "stage-1", "mcl-{k}"),))
# Stage 0 vs MCL, then MCL vs plain fine-tuning at equal steps: after one stage (the paper's released model) and k.
MULTIMODAL_DEMO = Demo(CONFIG_DIR / "multimodal.yaml", "runs/demo-multimodal", (
    ("zeroshot", "stage-0", "mcl-{k}"), ("zeroshot", "finetune-1", "stage-1"), ("zeroshot", "finetune-{k}", "mcl-{k}"),
    ("clip-blind", "finetune-1", "stage-1"), ("clip-blind", "finetune-{k}", "mcl-{k}")))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl demo``."""
    text = "generate Trifeature, train MCL, evaluate and report"
    parser = subparsers.add_parser("demo", help=text, description=text)
    parser.add_argument("--multimodal", action="store_true",
                        help=f"the multimodal recipe: fine-tune an aligned CLIP with MCL "
                             f"({MULTIMODAL_DEMO.config.name}; needs pip install 'mcl[pretrained,text]'); "
                             f"default --out {MULTIMODAL_DEMO.out}")
    parser.add_argument("--out", default=None,
                        help=f"run directory (default {DEMO.out}; {MULTIMODAL_DEMO.out} with --multimodal)")
    add_set(parser)
    add_log(parser)
    add_quiet(parser)
    parser.set_defaults(func=run)


def _timed(label: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)``, its duration recorded as phase ``label``."""
    from mcl.logging_utils import timed_phase

    with timed_phase(label):
        return func(*args, **kwargs)


def run_demo(demo: Demo, out: str | Path | None = None, overrides: list[str] | None = None, progress: bool = True,
             log: list[str] | None = None) -> None:
    """Generate, train, evaluate and report ``demo`` into ``out``; print the tables and the phase timings."""
    from mcl.api import as_config, evaluate, train
    from mcl.data.resolve import resolve_data
    from mcl.evaluation.tables import compare
    from mcl.logging_utils import PHASE_TIMES, metrics_logging
    from mcl.modalities import modality_of
    from mcl.report import write_report

    started = time.perf_counter()
    first_phase = len(PHASE_TIMES)
    out = Path(out or demo.out)
    overrides = list(overrides or [])
    config = as_config(demo.config, overrides)
    # Generated here (mcl.train then finds it) so that its time is a phase of its own.
    _timed("data generation", resolve_data, config, out, None, progress)
    with metrics_logging(log or [], out):
        trained = train(demo.config, out=out, overrides=overrides, progress=progress)
    result = _timed("evaluation", evaluate, out, progress=progress)
    report = _timed("report", write_report, out)

    stages = trained.config.mcl.stages
    print(modality_of(trained.config).format_results(result))
    print()
    # stages == 1: no integrated model, stage 1 is the run's result (and a comparison may then repeat)
    def name(template: str) -> str:
        formatted = template.format(k=stages)
        return "stage-1" if formatted == "mcl-1" else formatted

    comparisons = dict.fromkeys((probe, name(first), name(second)) for probe, first, second in demo.comparisons)
    for probe, first, second in comparisons:
        lines = compare(result, probe, first, second)
        if "\n" in lines:  # both representations have rows of this probe
            print(lines)
    total = time.perf_counter() - started
    print()
    print(format_phase_times(PHASE_TIMES[first_phase:], total))
    print(f"\ndemo finished in {total:.0f} s; run directory: {out} "
          f"(scores in {out / EVAL_FILE})")
    print(f"report: {report}")


def run(args: argparse.Namespace) -> None:
    """``mcl demo`` (``args.multimodal``, ``args.out``, ``args.set``, ``args.quiet``, ``args.log``)."""
    demo = MULTIMODAL_DEMO if getattr(args, "multimodal", False) else DEMO
    run_demo(demo, getattr(args, "out", None), getattr(args, "set", None), not getattr(args, "quiet", False),
             getattr(args, "log", None))

