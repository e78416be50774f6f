"""``mcl generate KIND --out DIR [--format png|jpeg|webdataset]``: write a synthetic data set.

Any generator of :data:`mcl.data.GENERATOR_NAMES`, as an image table (``labels.csv`` and PNG or JPEG files) or
as WebDataset tar shards (``KEY.png`` with ``KEY.json`` attributes and ``KEY.txt`` captions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcl.cli.common import add_quiet
from mcl.data import GENERATOR_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl generate``."""
    text = "write a generated data set as an image table"
    parser = subparsers.add_parser("generate", help=text, description=text)
    parser.add_argument("kind", choices=sorted(GENERATOR_NAMES))
    parser.add_argument("--out", required=True, help="image-table directory to write")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["png", "jpeg", "webdataset"], default="png",
                        help="png/jpeg image table (labels.csv), or WebDataset tar shards")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (--format webdataset)")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Generate ``args.kind`` into ``args.out``."""
    from mcl.config.schema import MAX_SEED
    from mcl.data import GENERATORS
    from mcl.errors import ConfigError

    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"mcl generate --seed: expected an integer in [0, {MAX_SEED}], got {args.seed}")
    if args.shard_size < 1:
        raise ConfigError(f"mcl generate --shard-size: expected a positive integer, got {args.shard_size}")
    path = GENERATORS[args.kind](Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                 image_size=args.image_size, seed=args.seed, progress=not args.quiet,
                                 format=args.format, shard_size=args.shard_size)
    what = "WebDataset shards" if args.format == "webdataset" else "image table"
    print(f"wrote the {args.kind} {what} to {path}")
