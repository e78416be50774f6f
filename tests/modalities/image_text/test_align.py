"""The aligned stage 0: settings, corpus, cached-feature split of the image tower, build-or-load."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
from pathlib import Path

import pytest
import torch

from mcl.errors import ConfigError, RunDirError
from mcl.files import save_tensors
from mcl.modalities.image_text.align import (
    ALIGNED,
    CACHE_ENV,
    METADATA_KEY,
    AlignSettings,
    _lr_factor,
    add_parser,
    aligned_stage0,
    aligned_stage0_path,
    build_corpus,
    installed_corpus,
    load_align_settings,
    load_stage0_checkpoint,
    load_stage0_into,
    split_image_tower,
)
from mcl.models import efficientnet_lite
from mcl.models.efficientnet_lite import efficientnet_lite0
from mcl.models.two_tower import ImagePreprocess, PretrainedTowers


def test_packaged_settings_load_and_overrides_are_checked(tmp_path: Path) -> None:
    settings = load_align_settings()
    assert settings == AlignSettings(**settings.to_dict())
    assert load_align_settings(overrides={"steps": 10}).steps == 10
    assert load_align_settings(overrides={"steps": 10}).digest() != settings.digest()
    with pytest.raises(ConfigError, match="unknown align setting.*'stpes'"):
        load_align_settings(overrides={"stpes": 10})
    with pytest.raises(ConfigError, match="'lr'.*expected > 0"):
        load_align_settings(overrides={"lr": 0})
    with pytest.raises(ConfigError, match="'steps'.*expected an integer"):
        load_align_settings(overrides={"steps": "many"})
    with pytest.raises(ConfigError, match="'steps'.*expected an integer"):
        load_align_settings(overrides={"steps": 1.5})
    assert load_align_settings(overrides={"lr": 1, "image_resolution": None}).image_resolution is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_align_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_align_settings(tmp_path / "missing.yaml")


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


def test_corpus_has_complete_captions() -> None:
    corpus = build_corpus(AlignSettings(trifeature=12, digits=0, fashion_mnist=0, image_size=16))
    assert corpus.images.shape == (12, 16, 16, 3) and corpus.sizes == {"trifeature": 12}
    assert len(corpus.captions) == 12
    with pytest.raises(ConfigError, match="corpus is empty"):
        build_corpus(AlignSettings(trifeature=0, digits=0, fashion_mnist=0))


def test_warmup_then_cosine() -> None:
    settings = AlignSettings(steps=110, warmup_steps=10)
    assert _lr_factor(0, settings) == pytest.approx(0.1)
    assert _lr_factor(9, settings) == pytest.approx(1.0)
    assert _lr_factor(60, settings) == pytest.approx(0.5)
    assert _lr_factor(110, settings) == pytest.approx(0.0)


def test_cached_prefix_then_suffix_is_the_tower() -> None:
    torch.manual_seed(0)
    tower = efficientnet_lite0(pretrained=False, num_classes=0).eval()
    model = types.SimpleNamespace(image_tower=tower,
                                  preprocess=ImagePreprocess(efficientnet_lite.MEAN, efficientnet_lite.STD, 32))
    images = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        expected = tower.forward_features(model.preprocess(images))
        for unlocked in (0, 1, 3, 9):
            prefix, suffix = split_image_tower(model, unlocked)  # type: ignore[arg-type]
            assert torch.allclose(suffix(prefix(images)), expected, atol=1e-5), unlocked
    with pytest.raises(ConfigError, match="unlocked_image_groups"):
        split_image_tower(model, 10)  # type: ignore[arg-type]


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", "--out", "x.safetensors", "--set", "steps=5", "--force"])
    assert args.out == "x.safetensors" and args.overrides == ["steps=5"] and args.force and callable(args.func)


def test_cli_keeps_an_existing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stage0.safetensors"
    save_tensors(path, {"w": torch.zeros(1)}, metadata={METADATA_KEY: json.dumps({"final_loss": 0.5})})
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", "--out", str(path), "--set", "steps=5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "exists" in out and '"final_loss": 0.5' in out
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        args.func(parser.parse_args(["align", "--out", str(path), "--set", "steps"]))


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
