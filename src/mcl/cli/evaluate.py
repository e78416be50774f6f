"""``mcl eval RUN_DIR [--data DIR] [--partial] [--set eval.KEY=VALUE]``: score every representation -> ``eval.json``.

The scoring is :func:`mcl.api.evaluate`; the tables are the run's modality's
(:meth:`Modality.format_results`), so this module knows nothing about unimodal versus image-text
runs. A run whose training has not finished is refused (its rows would pass for the finished run's)
unless ``--partial``: then the finished stages are scored, ``eval.json`` lists the
``unfinished_stages`` and the output says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mcl.cli.common import add_quiet, add_set
from mcl.run import EVAL_FILE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl eval``."""
    text = f"score every representation of a run -> RUN_DIR/{EVAL_FILE}"
    parser = subparsers.add_parser("eval", help=text, description=text)
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="image-table directory (default: the run's data set)")
    parser.add_argument("--partial", action="store_true",
                        help="score the finished stages of a run whose training has not finished (eval.json then "
                             "lists its unfinished_stages); without it such a run is an error")
    add_set(parser)  # eval.* keys only, for this evaluation (mcl.evaluation.overrides)
    add_quiet(parser)
    parser.set_defaults(func=run)


def partial_note(result: dict[str, Any]) -> str | None:
    """The line saying which stages a partial evaluation left out (None when the run had finished)."""
    missing = result.get("unfinished_stages")
    if not missing:
        return None
    names = ", ".join(f"stage-{s}" for s in missing)
    return f"partial evaluation: {names} not trained yet; these tables score the finished stages only"


def print_results(run_dir: str | Path, result: dict[str, Any]) -> None:
    """The run's tables (in its modality's layout), the partial-evaluation note, and where eval.json went."""
    from mcl.api import read_run_config
    from mcl.evaluation.stage_diagnostics import format_diagnostics
    from mcl.modalities import modality_of

    note = partial_note(result)
    if note:
        print(note + "\n")
    print(modality_of(read_run_config(run_dir)).format_results(result))
    if result.get("diagnostics"):
        print("\n" + format_diagnostics(result["diagnostics"]))
    if note:
        print("\n" + note)
    print(f"\nwrote {Path(run_dir) / EVAL_FILE}")


def run(args: argparse.Namespace) -> None:
    """Evaluate ``args.run_dir`` and print its tables."""
    from mcl.api import evaluate

    result = evaluate(args.run_dir, data=args.data, progress=not args.quiet,
                      allow_unfinished=getattr(args, "partial", False), overrides=getattr(args, "set", None))
    print_results(args.run_dir, result)
