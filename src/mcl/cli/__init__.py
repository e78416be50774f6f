"""Command-line interface: ``mcl demo | train | eval | embed | report | generate | eval-mmvp | cluster | align``.

One module per command, each with ``add_parser(subparsers)`` (which sets ``func``) and
``run(args)``; :mod:`mcl.cli.common` holds what they share (``CONFIG_DIR``, ``--quiet``, ``--set``,
``--log``, logging). The commands parse arguments and print; the work is :mod:`mcl.api`'s.

Errors from bad input (:class:`mcl.errors.MCLError`) are one line on stderr and exit code 2
(``--debug`` shows the traceback); so is a full disk. Ctrl-C exits 130 (re-run to resume).

Example::

    mcl train configs/demo.yaml --out runs/demo --set train.epochs=2
    mcl eval runs/demo            # --partial to score a run whose training has not finished
"""

from __future__ import annotations

import argparse
import os
import sys

from mcl.cli import align, cluster, configs, demo, embed, evaluate, export, generate, mmvp, report, train
from mcl.cli.common import setup_logging
from mcl.errors import MCLError, one_line
from mcl.files import DISK_FULL_ERRNOS

# `mcl <name>` modules in the order --help lists them.
COMMANDS = (demo, train, evaluate, embed, report, generate, mmvp, cluster, align, export, configs)


def build_parser() -> argparse.ArgumentParser:
    """The ``mcl`` argument parser: global options and one sub-command per module of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="mcl", description="Multistage Contrastive Learning")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="more log output")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mcl`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
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
