"""Multimodal commands for the ``mcl`` CLI: ``mcl demo --multimodal`` and ``mcl eval-mmvp``.

Kept out of :mod:`mcl.cli` so that module only wires them in (:func:`add_multimodal_commands`,
:func:`add_multimodal_demo_option`, and ``cmd_demo`` calling :func:`cmd_demo_multimodal` when
``--multimodal`` is given).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
DEMO_CONFIG = CONFIG_DIR / "multimodal.yaml"
DEFAULT_DEMO_OUT = "runs/demo-multimodal"
MMVP_FILE = "mmvp.json"


def cmd_demo_multimodal(args: argparse.Namespace) -> None:
    """Captioned Trifeature, MCL with a small from-scratch CLIP (``configs/multimodal.yaml``), evaluated.

    Uses ``args.out`` (default ``runs/demo-multimodal``), ``args.set`` (config overrides),
    ``args.quiet`` and ``args.log``. Prints every table and stage 1 versus the integrated model.
    """
    import mcl
    from mcl.evaluation.multimodal_runner import compare, evaluate_multimodal_run, format_tables
    from mcl.logging_utils import metrics_logging

    started = time.perf_counter()
    out = Path(getattr(args, "out", None) or DEFAULT_DEMO_OUT)
    progress = not getattr(args, "quiet", False)
    with metrics_logging(getattr(args, "log", None) or [], out):
        run = mcl.train(DEMO_CONFIG, out=out, overrides=getattr(args, "set", None) or [], progress=progress)
    result = evaluate_multimodal_run(out, progress=progress)
    integrated = f"mcl-{run.config.mcl.stages}" if run.config.mcl.stages > 1 else "stage-1"
    print(format_tables(result))
    print()
    for probe in ("zeroshot", "paired"):
        print(compare(result, probe, "stage-1", integrated))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; run directory: {out} "
          f"(scores in {out / 'eval.json'})")


def mmvp_rows(run_dir: str | Path, mmvp_dir: str | Path, image_size: int | None = None) -> dict[str, Any]:
    """MMVP-VLM scores of every representation of a multimodal run (``eval.json`` row schema).

    Rows: ``{representation, attribute: <MMVP category> | "average", probe: "mmvp", accuracy}``.
    Images are decoded at ``image_size`` (default: the run's ``data.image_size``); each model then
    applies its own preprocessing.
    """
    from mcl.api import read_run_config
    from mcl.errors import ConfigError
    from mcl.evaluation.mmvp import load_mmvp, score_mmvp
    from mcl.evaluation.multimodal_runner import row, two_tower_representations

    config = read_run_config(run_dir)
    if not config.multimodal.enabled:
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'}: not a multimodal run (multimodal.enabled is false)")
    size = image_size or config.data.image_size
    benchmark = load_mmvp(mmvp_dir, image_size=size)
    rows = []
    for name, model in two_tower_representations(run_dir, config).items():
        scores = score_mmvp(model, benchmark)
        for category, accuracy in [*scores["categories"].items(), ("average", scores["average"])]:
            rows.append(row(name, category, "mmvp", accuracy))
    return {"kind": "mmvp", "mmvp_dir": str(mmvp_dir), "image_size": size, "rows": rows}


def cmd_eval_mmvp(args: argparse.Namespace) -> None:
    """``mcl eval-mmvp RUN_DIR --mmvp DIR``: MMVP-VLM per category for every representation."""
    from mcl.evaluation.runner import format_table
    from mcl.io import write_json

    result = mmvp_rows(args.run_dir, args.mmvp, getattr(args, "image_size", None))
    write_json(Path(args.run_dir) / MMVP_FILE, result)
    print(format_table(result, "mmvp"))
    print(f"\nwrote {Path(args.run_dir) / MMVP_FILE}")


def add_multimodal_commands(subparsers: Any) -> None:
    """Add ``eval-mmvp`` to the ``mcl`` sub-command parsers (``build_parser``'s ``sub``)."""
    command = subparsers.add_parser("eval-mmvp", help="MMVP-VLM scores of a multimodal run -> RUN_DIR/mmvp.json",
                                    description="MMVP-VLM scores (per category and average) of every stage and "
                                                "integrated model of a multimodal run")
    command.set_defaults(func=cmd_eval_mmvp)
    command.add_argument("run_dir")
    command.add_argument("--mmvp", required=True, metavar="DIR",
                         help="MMVP-VLM directory (Questions.csv and 'MLLM_VLM Images/')")
    command.add_argument("--image-size", type=int, default=None,
                         help="decode the MMVP images at this size (default: the run's data.image_size)")
    command.add_argument("--quiet", action="store_true", help="no progress bars")


def add_multimodal_demo_option(demo: argparse.ArgumentParser) -> None:
    """``mcl demo --multimodal``."""
    demo.add_argument("--multimodal", action="store_true",
                      help=f"CLIP-style MCL on captioned Trifeature ({DEMO_CONFIG.name}); default --out "
                           f"{DEFAULT_DEMO_OUT}")
