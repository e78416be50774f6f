"""``mcl embed RUN_DIR --data DIR --out X.npy``: integrated features of an image table's images.

Row order of ``X.npy``: the rows of ``DIR/labels.csv`` in file order, every split (train and test
alike), minus the images skipped as unreadable when the run's ``data.on_bad_image`` is ``skip``.
``--paths P.txt`` writes each row's image path (one per line, same order) so rows can be matched up
whatever was skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcl.cli.common import add_quiet

ROW_ORDER = ("rows = the rows of labels.csv in file order, all splits (train and test), minus the images skipped "
             "as unreadable when the run's data.on_bad_image is 'skip'")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl embed``."""
    text = "integrated features of an image table's images -> .npy (N x D float32)"
    parser = subparsers.add_parser("embed", help=text, description=f"{text}; {ROW_ORDER}; --paths lists them")
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True, help="image-table directory")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--stages", type=int, default=None, help="use the first k stages (default all)")
    parser.add_argument("--paths", default=None, metavar="P.txt",
                        help="also write each row's image path (as in labels.csv), one per line, in row order")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Embed every image of ``args.data`` with the run's integrated model and save the array."""
    import numpy as np

    from mcl.api import load, read_run_config
    from mcl.data import load_table
    from mcl.data.table.labels import read_labels
    from mcl.errors import DataError
    from mcl.files import atomic_open, write_bytes

    config = read_run_config(args.run_dir)
    table = load_table(args.data, image_size=config.data.image_size, on_bad_image=config.data.on_bad_image,
                       progress=not args.quiet)
    if args.paths:  # one path per line: a path holding a line break would shift every later row
        broken = next((path for path in table.paths if "\n" in path or "\r" in path), None)
        if broken is not None:
            raise DataError(f"{Path(args.data) / 'labels.csv'}: image path {broken!r} holds a line break; "
                            "--paths writes one path per line, so rename that file or leave out --paths")
    features = load(args.run_dir).embed(table.images, stages=args.stages)
    with atomic_open(args.out, "wb") as handle:
        np.save(handle, features)
    if args.paths:
        write_bytes(args.paths, "".join(f"{path}\n" for path in table.paths).encode())
    print(f"wrote {features.shape[0]} x {features.shape[1]} features to {args.out}")
    skipped = len(read_labels(Path(args.data)).paths) - len(table)
    print(f"{ROW_ORDER} ({skipped} skipped here)" + (f"; their paths: {args.paths}" if args.paths else ""))
