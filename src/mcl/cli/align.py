"""``mcl align``: build the aligned stage 0 (:mod:`mcl.modalities.image_text.align`) and print its numbers.

    mcl align                                   # into the cache ($MCL_CACHE_DIR or ~/.cache/mcl)
    mcl align --out stage0.safetensors --set steps=500 --force

Settings come from ``--config`` (default: the packaged ``configs/align.yaml``) with ``--set KEY=VALUE``
overrides parsed as the run config's are (:func:`mcl.config.apply_overrides`). An existing checkpoint
is kept unless ``--force``; the build holds the checkpoint's file lock.
"""

from __future__ import annotations

import argparse
import json

from mcl.cli.common import add_quiet
from mcl.config import apply_overrides
from mcl.modalities.image_text.align import ALIGNED, CACHE_ENV
from mcl.modalities.image_text.align.checkpoint import (
    aligned_stage0_path,
    build_aligned_stage0,
    file_lock,
    load_stage0_checkpoint,
)
from mcl.modalities.image_text.align.settings import load_align_settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl align`` (handler :func:`run`, as ``func``)."""
    text = "align the shipped pretrained towers (LiT-style) on generated captions: the aligned stage 0"
    parser = subparsers.add_parser("align", help=text, description=text)
    parser.add_argument("--out", metavar="PATH",
                        help=f"checkpoint to write (.safetensors); default: the cache ({CACHE_ENV} or ~/.cache/mcl)")
    parser.add_argument("--config", metavar="YAML", help="align settings (default: the packaged configs/align.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set steps=500 (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the checkpoint exists")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``mcl align``: build the checkpoint (unless it exists and no ``--force``); prints its path and numbers."""
    settings = load_align_settings(args.config, apply_overrides({}, args.overrides))
    path = aligned_stage0_path(args.out or ALIGNED, settings)
    if path.is_file() and not args.force:
        _, metadata = load_stage0_checkpoint(path)
        print(f"{path}: exists (use --force to rebuild)")
    else:
        with file_lock(path):
            metadata = build_aligned_stage0(settings, path, progress=not args.quiet)
        print(f"{path}: written")
    print(json.dumps({key: metadata.get(key) for key in ("corpus", "total_seconds", "final_loss",
                                                         "trifeature_zeroshot")}))
    return 0
