"""``mcl export RUN --format torchscript|onnx|state-dict [--stages k] --out FILE``: take a trained model elsewhere.

The image encoder (float32 ``(N, 3, H, W)`` in [0, 1] -> the features ``mcl.load(RUN).embed`` returns,
normalisation inside the graph) as TorchScript or ONNX, or every weight as safetensors; a sidecar
``FILE.json`` says what the file takes and returns and how it was made (:mod:`mcl.export`).

Example::

    mcl export runs/demo --format onnx --out demo.onnx
    mcl export runs/demo --format torchscript --stages 2 --out demo-2.pt
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mcl export``."""
    text = "export a run's image encoder (TorchScript, ONNX) or its weights (state-dict), with a JSON sidecar"
    parser = subparsers.add_parser("export", help=text, description=text)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx", "state-dict"],
                        help="torchscript (torch.jit.load), onnx (onnxruntime; needs the export extra), "
                             "state-dict (safetensors of every weight, config in the sidecar)")
    parser.add_argument("--stages", type=int, help="the first k stages (default: every finished stage)")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write; FILE.json is its sidecar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Export ``args.run_dir`` to ``args.out``."""
    from mcl.export import describe, export_run

    print(describe(export_run(args.run_dir, args.format, args.out, args.stages)))
