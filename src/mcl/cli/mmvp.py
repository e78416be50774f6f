"""``mcl eval-mmvp RUN_DIR --mmvp DIR``: MMVP-VLM per category for every representation -> ``RUN_DIR/mmvp.json``.

The scoring is :func:`mcl.evaluation.mmvp_runner.mmvp_rows`; this module parses, writes and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcl.cli.common import add_quiet
from mcl.run import MMVP_FILE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl eval-mmvp``."""
    parser = subparsers.add_parser("eval-mmvp", help=f"MMVP-VLM scores of a multimodal run -> RUN_DIR/{MMVP_FILE}",
                                   description="MMVP-VLM scores (per category and average) of every stage and "
                                               "integrated model of a multimodal run")
    parser.add_argument("run_dir")
    parser.add_argument("--mmvp", required=True, metavar="DIR",
                        help="MMVP-VLM directory (Questions.csv and 'MLLM_VLM Images/')")
    parser.add_argument("--image-size", type=int, default=None,
                        help="decode the MMVP images at this size (default: the run's data.image_size)")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Score ``args.run_dir`` on the MMVP-VLM pairs in ``args.mmvp``; write and print the table."""
    from mcl.evaluation.mmvp_runner import mmvp_rows
    from mcl.evaluation.tables import format_table
    from mcl.files import write_json

    result = mmvp_rows(args.run_dir, args.mmvp, getattr(args, "image_size", None))
    write_json(Path(args.run_dir) / MMVP_FILE, result)
    print(format_table(result, "mmvp"))
    print(f"\nwrote {Path(args.run_dir) / MMVP_FILE}")
