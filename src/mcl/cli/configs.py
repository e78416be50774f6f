"""``mcl configs [NAME]``: the configs shipped inside the package, which every command takes by name.

Without NAME, one line per config (its name and the first line of its leading comment); with NAME, the
config's YAML, to copy and edit (``mcl configs demo > mine.yaml``).

Example::

    mcl configs
    mcl train demo --out runs/demo     # the shipped demo config, from any directory
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl configs``."""
    text = "list the shipped configs (usable by name: mcl train demo), or print one"
    parser = subparsers.add_parser("configs", help=text, description=text)
    parser.add_argument("name", nargs="?", metavar="NAME", help="print this config's YAML")
    parser.set_defaults(func=run)


def _summary(text: str) -> str:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip("#").strip() if first.startswith("#") else ""


def run(args: argparse.Namespace) -> None:
    """List the shipped configs, or print the one named."""
    from mcl.cli.common import resolve_config, shipped_configs

    shipped = shipped_configs()
    if args.name:
        from pathlib import Path

        print(Path(resolve_config(args.name)).read_text(), end="")
        return
    width = max(len(name) for name in shipped) + 2
    for name, path in shipped.items():
        print(f"{name:<{width}}{_summary(path.read_text())}")
