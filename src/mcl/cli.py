"""Command-line interface: ``mcl demo | train | eval | embed | report | generate``.

Errors from bad input are one line on stderr and exit code 2 (``--debug`` shows the traceback); so is
a full disk. ``mcl train`` on an existing run directory continues that run (same config and data
required); ``--resume`` makes that explicit and fails if there is nothing to continue.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mcl.cli_multimodal import add_multimodal_commands, add_multimodal_demo_option
from mcl.data import GENERATORS
from mcl.errors import MCLError, one_line
from mcl.io import DISK_FULL_ERRNOS
from mcl.logging_utils import LOGGERS

logger = logging.getLogger("mcl")

CONFIG_DIR = Path(__file__).parent / "configs"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[mcl] %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _init_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _train_config(args: argparse.Namespace) -> str:
    """The config to train with: the one given, or with ``--resume`` the run directory's own."""
    from mcl.errors import ConfigError
    from mcl.rundir import RunDirectory

    if getattr(args, "resume", False):
        RunDirectory(args.out).require_existing()
        if args.config is None:
            return str(Path(args.out) / "config.yaml")
    if args.config is None:
        raise ConfigError("mcl train: a CONFIG.yaml is required (or --resume --out RUN_DIR to continue a run)")
    return args.config


def cmd_train(args: argparse.Namespace) -> None:
    """Train (or resume) all stages."""
    import mcl
    from mcl.logging_utils import metrics_logging

    _init_distributed()
    started = time.perf_counter()
    config = _train_config(args)
    with metrics_logging(args.log, Path(args.out)):
        run = mcl.train(config, out=args.out, data=args.data, overrides=args.set, progress=not args.quiet)
    print(f"trained {run.encoder.num_stages} stages in {time.perf_counter() - started:.0f} s -> {run.run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    """Probe every representation on every attribute."""
    from mcl.evaluation.runner import evaluate_run, format_table

    result = evaluate_run(args.run_dir, data=args.data, progress=not args.quiet)
    if result.get("kind") == "multimodal":
        from mcl.evaluation.multimodal_runner import format_tables

        print(format_tables(result))
    else:
        print(format_table(result, "linear"))
        print()
        print(format_table(result, "knn"))
    print(f"\nwrote {Path(args.run_dir) / 'eval.json'}")


def cmd_embed(args: argparse.Namespace) -> None:
    """Integrated features of a table's images, saved as .npy."""
    import numpy as np

    import mcl
    from mcl.api import read_run_config
    from mcl.data import load_table
    from mcl.io import atomic_open

    config = read_run_config(args.run_dir)
    table = load_table(args.data, image_size=config.data.image_size, on_bad_image=config.data.on_bad_image,
                       progress=not args.quiet)
    features = mcl.load(args.run_dir).embed(table.images, stages=args.stages)
    with atomic_open(args.out, "wb") as handle:
        np.save(handle, features)
    print(f"wrote {features.shape[0]} x {features.shape[1]} features to {args.out}")


def cmd_generate(args: argparse.Namespace) -> None:
    """Write a generated data set as an image table."""
    from mcl.data import GENERATORS

    path = GENERATORS[args.kind](Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                 image_size=args.image_size, seed=args.seed)
    print(f"wrote the {args.kind} image table to {path}")


def cmd_report(args: argparse.Namespace) -> None:
    """Plots of a run as a self-contained HTML page."""
    from mcl.report import write_report

    print(f"wrote {write_report(args.run_dir, args.map)}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Generate Trifeature, train all stages with configs/demo.yaml, evaluate, report, print the table."""
    if args.multimodal:
        from mcl.cli_multimodal import cmd_demo_multimodal

        return cmd_demo_multimodal(args)
    from mcl.report import write_report

    args.out = args.out or "runs/demo"
    started = time.perf_counter()
    args.config = str(CONFIG_DIR / "demo.yaml")
    args.data = None
    cmd_train(args)
    args.run_dir = args.out
    cmd_eval(args)
    report = write_report(Path(args.out))
    print(f"demo finished in {time.perf_counter() - started:.0f} s; run directory: {args.out}")
    print(f"report: {report}")


def build_parser() -> argparse.ArgumentParser:
    """The ``mcl`` argument parser."""
    parser = argparse.ArgumentParser(prog="mcl", description="Multistage Contrastive Learning")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(func=func)
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        return command

    demo = add("demo", cmd_demo, "generate Trifeature, train MCL, evaluate and report")
    demo.add_argument("--out", default=None,
                      help="run directory (default runs/demo; runs/demo-multimodal with --multimodal)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    _add_log_option(demo)

    train = add("train", cmd_train, "train all stages; on an existing run directory, continue that run")
    train.add_argument("config", nargs="?",
                       help="YAML config (see configs/); with --resume it defaults to RUN_DIR/config.yaml")
    train.add_argument("--data", help="image-table directory (overrides the config's data set)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--out", default="runs/mcl", help="run directory (default runs/mcl)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out (an error if none was started there); a plain re-run "
                            "continues too")
    _add_log_option(train)

    report = add("report", cmd_report, "plots of a run -> RUN_DIR/report/report.html (self-contained)")
    report.add_argument("run_dir")
    report.add_argument("--map", choices=["pca", "umap"], default="pca",
                        help="2-D map of the features: pca (default; linear like the probes, instant) or umap "
                             "(needs umap-learn)")

    evaluate = add("eval", cmd_eval, "per-attribute probes -> RUN_DIR/eval.json")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="image-table directory (default: the run's data set)")

    embed = add("embed", cmd_embed, "integrated features of a table's images -> .npy")
    embed.add_argument("run_dir")
    embed.add_argument("--data", required=True, help="image-table directory")
    embed.add_argument("--out", required=True, help="output .npy file")
    embed.add_argument("--stages", type=int, default=None, help="use the first k stages (default all)")

    generate = add("generate", cmd_generate, "write a generated data set as an image table")
    generate.add_argument("kind", choices=sorted(GENERATORS))
    generate.add_argument("--out", required=True)
    generate.add_argument("--n-train", type=int, default=4000)
    generate.add_argument("--n-test", type=int, default=1000)
    generate.add_argument("--image-size", type=int, default=32)
    generate.add_argument("--seed", type=int, default=0)

    add_multimodal_demo_option(demo)
    add_multimodal_commands(sub)
    return parser


def _add_log_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--log", action="append", default=[], choices=LOGGERS,
                         help="also log epoch metrics to TensorBoard (RUN_DIR/tensorboard); metrics.jsonl is "
                              "always written")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mcl`` command."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        args.func(args)
    except MCLError as exc:
        if args.debug:
            raise
        print(f"mcl: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if args.debug or exc.errno not in DISK_FULL_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mcl: error: {where}{os.strerror(exc.errno)}; free some space and re-run the same command "
              "to continue", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcl: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
