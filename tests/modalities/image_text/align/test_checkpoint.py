"""The aligned stage 0 on disk: cache path, metadata check, build then load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mcl.errors import ConfigError, RunDirError
from mcl.files import save_tensors
from mcl.modalities.image_text.align import ALIGNED, CACHE_ENV
from mcl.modalities.image_text.align.checkpoint import (
    aligned_stage0,
    aligned_stage0_path,
    load_stage0_checkpoint,
    load_stage0_into,
)
from mcl.modalities.image_text.align.corpus import installed_corpus
from mcl.modalities.image_text.align.settings import AlignSettings
from mcl.models.two_tower import PretrainedTowers


def test_cache_path_follows_env_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    settings = AlignSettings(steps=7)
    path = aligned_stage0_path(ALIGNED, settings)
    assert path.parent == tmp_path and installed_corpus(settings).digest() in path.name
    assert path.suffix == ".safetensors"
    # A machine without the Fashion-MNIST files builds a model without garments: another name, never the full one's.
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (fashion / f"{stem}.gz").touch()
    monkeypatch.setenv("MCL_FASHION_MNIST_DIR", str(fashion))
    assert installed_corpus(settings).fashion_mnist == 1000
    with_garments = aligned_stage0_path(ALIGNED, settings)
    monkeypatch.setenv("MCL_FASHION_MNIST_DIR", str(tmp_path / "no-fashion"))
    assert installed_corpus(settings).fashion_mnist == 0 and installed_corpus(settings).trifeature == 3000
    without = aligned_stage0_path(ALIGNED, settings)
    assert without != with_garments
    expected = dataclasses.replace(settings, fashion_mnist=0, digits=installed_corpus(settings).digits)
    assert without.name == f"aligned-stage0-{expected.digest()}.safetensors"
    assert aligned_stage0_path(tmp_path / "mine.safetensors") == tmp_path / "mine.safetensors"
    with pytest.raises(RunDirError, match="mcl align --out"):
        aligned_stage0(tmp_path / "missing.safetensors", build=False)


def test_checkpoint_without_align_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_tensors(path, {"w": torch.zeros(2)})
    with pytest.raises(RunDirError, match="not an aligned stage-0 checkpoint"):
        load_stage0_checkpoint(path)


@pytest.mark.slow
def test_build_then_load_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real towers, aligned for a handful of steps on a tiny corpus; the second call only loads."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    settings = AlignSettings(trifeature=48, digits=0, fashion_mnist=0, image_size=16, image_resolution=None,
                             steps=4, batch_size=16, warmup_steps=1, eval_trifeature=20)
    model = aligned_stage0(ALIGNED, settings)
    path = aligned_stage0_path(ALIGNED, settings)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    _, metadata = load_stage0_checkpoint(path)
    assert metadata["corpus"] == {"trifeature": 48} and set(metadata["trifeature_zeroshot"]) == {
        "color", "texture", "shape"}
    again = aligned_stage0(ALIGNED, settings)
    assert path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    tokens = again.tokenize(["a red striped triangle"])
    assert again.encode_text(tokens).shape == (1, settings.embed_dim)
    # What a run's multimodal.stage0_checkpoint does: load into the model its config builds.
    from_config = PretrainedTowers(**settings.model_kwargs(), pretrained_image=False)
    assert load_stage0_into(from_config, ALIGNED, settings)["corpus"] == {"trifeature": 48}
    assert torch.equal(from_config.image_projection.weight, model.image_projection.weight)
    wrong = PretrainedTowers(**{**settings.model_kwargs(), "context_length": 8}, pretrained_image=False)
    with pytest.raises(ConfigError, match="multimodal.context_length"):
        load_stage0_into(wrong, path)
