"""``mcl train CONFIG [--out RUN_DIR] [--data DIR] [--set KEY=VALUE] [--resume]``: train (or continue) all stages.

On an existing run directory ``mcl train`` continues that run (same config and data required);
``--resume`` makes that explicit, fails if there is nothing to continue, and defaults the config to
``RUN_DIR/config.yaml``. Under torchrun every rank runs this command (see :func:`init_distributed`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mcl.cli.common import add_log, add_quiet, add_set, init_distributed, resolve_config
from mcl.run import CONFIG_FILE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl train``."""
    text = "train all stages; on an existing run directory, continue that run"
    parser = subparsers.add_parser("train", help=text, description=text)
    parser.add_argument("config", nargs="?",
                        help="YAML config, or the name of a shipped one (demo, multimodal, ...: see 'mcl configs'); "
                             f"with --resume it defaults to RUN_DIR/{CONFIG_FILE}")
    parser.add_argument("--data", help="data set replacing the config's: an image table (labels.csv), an "
                                          "ImageFolder directory or WebDataset shards")
    parser.add_argument("--out", default="runs/mcl", help="run directory (default runs/mcl)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (an error if none was started there); a plain re-run "
                             "continues too")
    add_set(parser)
    add_log(parser)
    add_quiet(parser)
    parser.set_defaults(func=run)


def config_to_train(args: argparse.Namespace) -> str:
    """The config to train with: the one given, or with ``--resume`` the run directory's own."""
    from mcl.errors import ConfigError
    from mcl.run import RunDirectory

    if getattr(args, "resume", False):
        RunDirectory(args.out).require_existing()
        if args.config is None:
            return str(Path(args.out) / CONFIG_FILE)
    if args.config is None:
        raise ConfigError("mcl train: a CONFIG.yaml is required (or --resume --out RUN_DIR to continue a run)")
    return resolve_config(args.config)


def run(args: argparse.Namespace) -> None:
    """Train (or resume) every stage of ``args.config`` into ``args.out``."""
    from mcl.api import train
    from mcl.logging_utils import metrics_logging

    init_distributed()
    started = time.perf_counter()
    config = config_to_train(args)
    with metrics_logging(args.log, Path(args.out)):
        result = train(config, out=args.out, data=args.data, overrides=args.set, progress=not args.quiet)
    print(f"trained {len(result.history.models)} stages in {time.perf_counter() - started:.0f} s -> {result.run_dir}")
