"""Take a trained run elsewhere: its image encoder as a TorchScript or ONNX graph, its weights as a state_dict.

The exported image encoder is one graph from pixels to the integrated features:

    input   float32 (N, 3, H, W), RGB in [0, 1], H = W = the run's data.image_size
    inside  each stage's preprocessing (its mean/std, and its resize where the backbone has an input size),
            each stage's backbone, the integration (per-stage L2 normalisation, then concatenation)
    output  float32 (N, D): what ``mcl.load(RUN).embed(images, stages=k)`` returns

Unimodal runs export their :class:`~mcl.integration.MultistageEncoder`; image-text runs the image tower of
their integrated two-tower model (L2-normalised, as ``embed`` returns it). ``torchscript`` is traced
(``torch.jit.trace``) and loads with ``torch.jit.load``; ``onnx`` uses torch's ``torch.export``-based exporter
(needs ``onnxscript``; the ``export`` extra) with a dynamic batch dimension. Both are checked before they are
written: the written graph is run on a seeded batch and must match ``embed`` within :data:`TOLERANCE`.

``state-dict`` writes the whole loaded model's weights (every stage, both towers for image-text runs) as
safetensors, with the run's resolved config in the sidecar, for code that rebuilds the model itself.

Every export writes a sidecar ``FILE.json``: format, input shape and range, image size, output dimension,
stages, integration, and how it was made (mcl and torch versions, run directory, measured difference).

Example:
    >>> info = export_run("runs/demo", "onnx", "encoder.onnx", stages=2)
    >>> info["output_dim"], info["check"]["max_abs_diff"] <= TOLERANCE
    (128, True)
"""

from __future__ import annotations

import datetime
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcl.errors import ConfigError, MCLError
from mcl.files import save_tensors, write_bytes, write_json
from mcl.objectives.core import l2_normalize

FORMATS = ("torchscript", "onnx", "state-dict")
TOLERANCE = 1e-4  # largest absolute difference to embed() an exported graph may show
CHECK_BATCH = 4  # images in the seeded check batch (the graph itself takes any batch size)


class ImageEncoderGraph(nn.Module):
    """float32 ``(N, 3, H, W)`` in [0, 1] -> the integrated ``(N, D)`` features ``embed`` returns.

    ``model``: what :func:`mcl.load` returns (a :class:`~mcl.integration.MultistageEncoder`, or a
    two-tower model with ``encode_image`` and ``select``); ``stages``: None = all, k = the first k.
    """

    def __init__(self, model: nn.Module, stages: int | None = None) -> None:
        super().__init__()
        self.two_tower = hasattr(model, "encode_image")
        if self.two_tower:
            self.model = model.select(stages)
        else:
            from mcl.integration import MultistageEncoder

            chosen = list(model.stages)[: stages or model.num_stages]
            self.model = MultistageEncoder(chosen, model.integration)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Integrated features of a batch (what ``embed`` returns for it)."""
        if self.two_tower:
            return l2_normalize(self.model.encode_image(images).float())
        return self.model(images)


def _check_stages(model: nn.Module, stages: int | None, run_dir: Path) -> list[int]:
    count = model.num_stages
    if stages is not None and not 1 <= stages <= count:
        raise ConfigError(f"--stages {stages}: {run_dir} has finished stages 1..{count}")
    if hasattr(model, "select"):
        return [int(s) for s in model.select(stages).members]
    return list(range(1, (stages or count) + 1))


def _check_batch(image_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(CHECK_BATCH, 3, image_size, image_size, generator=generator)


def _torchscript_bytes(graph: nn.Module, example: torch.Tensor) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(graph, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _run_torchscript(data: bytes, images: torch.Tensor) -> np.ndarray:
    loaded = torch.jit.load(io.BytesIO(data))
    with torch.no_grad():
        return loaded(images).numpy()


def _onnx_bytes(graph: nn.Module, example: torch.Tensor) -> bytes:
    try:
        import onnxscript  # noqa: F401 - torch's exporter needs it; a clear error instead of its traceback
    except ImportError:
        raise MCLError("ONNX export needs the onnxscript package: pip install 'mcl[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad(), tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices, not the user's business
        program = torch.onnx.export(graph, (example,), input_names=["images"], output_names=["features"],
                                    dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
        path = Path(scratch) / "model.onnx"
        program.save(str(path))
        if any(p.name != "model.onnx" for p in Path(scratch).iterdir()):
            raise MCLError("the ONNX model is larger than 2 GB (external data files); export torchscript instead")
        return path.read_bytes()


def _run_onnx(data: bytes, images: torch.Tensor) -> np.ndarray | None:
    try:
        import onnxruntime
    except ImportError:
        return None  # nothing to check with; the sidecar says so
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


def _made_by(run_dir: Path) -> dict[str, Any]:
    import mcl

    return {"tool": "mcl export", "mcl_version": mcl.__version__, "torch_version": torch.__version__,
            "run_dir": str(run_dir.resolve()),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, stages: int | None = None
               ) -> dict[str, Any]:
    """Export a finished run's image encoder (``torchscript`` / ``onnx``) or weights (``state-dict``) to ``out``.

    Writes ``out`` and the sidecar ``out.json`` (atomically, the graph only after it reproduced ``embed``);
    returns the sidecar's content. ``stages``: the first k stages (default all finished stages).
    """
    from mcl.api import load
    from mcl.run import RunDirectory

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    run_dir, out = Path(run_dir), Path(out)
    config = RunDirectory(run_dir).config()
    model = load(run_dir).eval()
    chosen = _check_stages(model, stages, run_dir)
    image_size = int(config.data.image_size)
    info: dict[str, Any] = {
        "format": fmt, "file": out.name,
        "modality": "image-text" if hasattr(model, "encode_image") else "images",
        "stages": chosen, "integration": model.integration, "image_size": image_size,
        "made_by": _made_by(run_dir),
    }
    if fmt == "state-dict":
        return _export_state_dict(model, config, out, info)
    images = _check_batch(image_size)
    expected = model.embed(images, stages=stages)
    # Eval mode after embed(): a two-tower select() view is built in train mode, and embed() restores the view's
    # mode on the members it shares, which would leave BatchNorm on batch statistics in the traced graph.
    graph = ImageEncoderGraph(model, stages).eval()
    data = _torchscript_bytes(graph, images) if fmt == "torchscript" else _onnx_bytes(graph, images)
    got = _run_torchscript(data, images) if fmt == "torchscript" else _run_onnx(data, images)
    check: dict[str, Any] = {"batch": CHECK_BATCH, "tolerance": TOLERANCE,
                             "against": "mcl.load(RUN).embed(images, stages)"}
    if got is None:
        check["max_abs_diff"] = None
        check["note"] = "onnxruntime not installed: not checked"
    else:
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise MCLError(f"{out}: the exported {fmt} graph differs from embed() by {diff:.3g} "
                           f"(> {TOLERANCE}); nothing written")
        check["max_abs_diff"] = diff
    info.update({
        "input": {"name": "images", "dtype": "float32", "shape": ["N", 3, image_size, image_size],
                  "layout": "NCHW, RGB", "range": [0.0, 1.0],
                  "preprocessing": "inside the graph: each stage's mean/std (and resize, if its backbone has an "
                                   "input size); feed raw pixels / 255"},
        "output": {"name": "features", "dtype": "float32", "shape": ["N", int(expected.shape[1])],
                   "meaning": "integrated features: each stage's L2-normalised features concatenated"
                   if model.integration == "normalized-concat" else "integrated features, L2-normalised"},
        "output_dim": int(expected.shape[1]), "check": check,
    })
    if fmt == "onnx":
        info["made_by"]["exporter"] = "torch.onnx.export(dynamo=True)"
    write_bytes(out, data)
    write_json(_sidecar(out), info)
    return info


def _export_state_dict(model: nn.Module, config: Any, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Every weight of the loaded model as safetensors (shared tensors written once each key), config beside."""
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    info.update({"class": f"{type(model).__module__}.{type(model).__qualname__}",
                 "tensors": len(state), "parameters": int(sum(v.numel() for v in state.values())),
                 "config": config.to_dict(),
                 "rebuild": "mcl: modality_of(config).integrate(...); or read the tensors with safetensors and "
                            "map them onto your own modules (keys: stages.<i>.<module path>)"})
    save_tensors(out, state, metadata={"format": "mcl state-dict"})
    write_json(_sidecar(out), info)
    return info


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def describe(info: dict[str, Any]) -> str:
    """One line for the command line: what was written."""
    if info["format"] == "state-dict":
        return (f"wrote {info['tensors']} tensors ({info['parameters']:,} parameters) of stages "
                f"{_stage_text(info['stages'])} to {info['file']} (+ .json with the config)")
    diff = info["check"]["max_abs_diff"]
    checked = f"max |diff| to embed() {diff:.1e}" if diff is not None else "not checked (no onnxruntime)"
    return (f"wrote the {info['format']} image encoder of stages {_stage_text(info['stages'])}: "
            f"(N, 3, {info['image_size']}, {info['image_size']}) in [0, 1] -> (N, {info['output_dim']}); {checked}")


def _stage_text(stages: Sequence[int]) -> str:
    return ", ".join(str(s) for s in stages)
