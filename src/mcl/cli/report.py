"""``mcl report RUN_DIR [--map pca|umap]``: plots of a run -> ``RUN_DIR/report/report.html`` (self-contained)."""

from __future__ import annotations

import argparse

from mcl.cli.common import add_quiet
from mcl.run import REPORT_DIR, REPORT_FILE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl report``."""
    text = f"plots of a run -> RUN_DIR/{REPORT_DIR}/{REPORT_FILE} (self-contained)"
    parser = subparsers.add_parser("report", help=text, description=text)
    parser.add_argument("run_dir")
    parser.add_argument("--map", choices=["pca", "umap"], default="pca",
                        help="2-D map of the features: pca (default; linear like the probes, instant) or umap "
                             "(needs umap-learn)")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Write the report of ``args.run_dir``."""
    from mcl.report import write_report

    print(f"wrote {write_report(args.run_dir, args.map)}")
