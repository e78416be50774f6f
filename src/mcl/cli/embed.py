"""``mcl embed RUN_DIR --data SOURCE --out X.npy``: integrated features of a data source's images.

``SOURCE`` is anything ``mcl train --data`` reads: an image table (``labels.csv``), an image folder
(``DIR/<class>/<image>``) or WebDataset shards. Row order of ``X.npy``: the source's rows in order
(``labels.csv`` in file order, a folder's sorted paths, shard order), every split (train and test alike)
unless ``--split``, minus the images skipped as unreadable when the run's ``data.on_bad_image`` is
``skip``. ``--split test`` keeps the test rows, with the run's automatic held-out split
(``data.test_fraction``, :mod:`mcl.data.split`) where the source has none, exactly as train and eval
chose it. ``--paths P.txt`` writes each row's image path (one per line, same order) so rows can be
matched up whatever was skipped.
"""

from __future__ import annotations

import argparse

from mcl.cli.common import add_quiet

ROW_ORDER = ("rows = the source's rows in order (the rows of labels.csv in file order, a folder's sorted paths, "
             "shard order), all splits unless --split, minus the images skipped as unreadable when the run's "
             "data.on_bad_image is 'skip'")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl embed``."""
    text = "integrated features of an image table's images -> .npy (N x D float32)"
    parser = subparsers.add_parser("embed", help=text, description=f"{text}; {ROW_ORDER}; --paths lists them")
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True,
                        help="image table, image folder or WebDataset shards (whatever 'mcl train --data' reads)")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--stages", type=int, default=None, help="use the first k stages (default all)")
    parser.add_argument("--paths", default=None, metavar="P.txt",
                        help="also write each row's image path (as in labels.csv), one per line, in row order")
    parser.add_argument("--split", choices=["all", "train", "test"], default="all",
                        help="which rows (default all); without a test split in the data, the run's automatic "
                             "held-out split (data.test_fraction)")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Embed every image of ``args.data`` with the run's integrated model and save the array."""
    import numpy as np

    from mcl.api import load, read_run_config
    from mcl.data import load_table
    from mcl.data.sources import count_rows
    from mcl.data.split import hold_out
    from mcl.errors import DataError
    from mcl.files import atomic_open, write_bytes

    config = read_run_config(args.run_dir)
    table = load_table(args.data, image_size=config.data.image_size, on_bad_image=config.data.on_bad_image,
                       progress=not args.quiet)
    if args.paths:  # one path per line: a path holding a line break would shift every later row
        broken = next((path for path in table.paths if "\n" in path or "\r" in path), None)
        if broken is not None:
            raise DataError(f"{args.data}: image path {broken!r} holds a line break; "
                            "--paths writes one path per line, so rename that file or leave out --paths")
    decoded = len(table)
    split = getattr(args, "split", "all")
    if split != "all":
        table = hold_out(table, config.data.test_fraction, args.data).subset(split)
    features = load(args.run_dir).embed(table.images, stages=args.stages)
    with atomic_open(args.out, "wb") as handle:
        np.save(handle, features)
    if args.paths:
        write_bytes(args.paths, "".join(f"{path}\n" for path in table.paths).encode())
    print(f"wrote {features.shape[0]} x {features.shape[1]} features to {args.out}")
    skipped = count_rows(args.data) - decoded
    print(f"{ROW_ORDER} ({skipped} skipped here)" + (f"; their paths: {args.paths}" if args.paths else ""))
