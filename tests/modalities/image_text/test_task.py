"""Multimodal MCL: the image-text stage task, cross-stage two-tower integration, stage 0, config, data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl.api import resolve_data
from mcl.augment import to_float_images
from mcl.config import apply_overrides, config_from_dict
from mcl.data import GENERATORS, load_table
from mcl.data.captions import import_image_text
from mcl.data.table import ImageTable
from mcl.embedding_file import EmbeddingFile, open_embeddings
from mcl.errors import ConfigError, DataError
from mcl.files import load_arrays, read_json
from mcl.modalities.image_text.multistage import MultistageTwoTower
from mcl.modalities.image_text.task import ImageTextTask
from mcl.modalities.image_text.towers import lock_towers
from mcl.objectives.clip import MAX_LOGIT_SCALE
from mcl.run import TOKENIZER_FILE, RunDirectory
from mcl.stages import ENCODER_FILE, PSEUDO_LABELS_FILE, StageHistory, next_pseudo_labels, run_stages

COLORS = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230)}


def _config(**multimodal: object):
    return config_from_dict({
        "objective": {"name": "clip"},
        "data": {"image_size": 16},
        "augment": {"color_jitter": 0.0, "crop_scale": [0.8, 1.0]},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "warmup_epochs": 0},
        "mcl": {"stages": 1, "clusters": 3, "min_group_size": 2, "kmeans_restarts": 1},
        "eval": {"ensemble": False},
        "multimodal": {"enabled": True, "embed_dim": 8, "image_width": 0.25, "text_width": 16, "text_layers": 1,
                       "text_heads": 2, "context_length": 8, **multimodal},
    })


def _table(n: int = 24) -> ImageTable:
    names = [list(COLORS)[i % 3] for i in range(n)]
    images = np.stack([np.full((16, 16, 3), COLORS[c], dtype=np.uint8) for c in names])
    return ImageTable(images=images, split=np.array(["train"] * n), attributes={"color": np.arange(n) % 3},
                      attribute_values={"color": list(COLORS)}, paths=[f"{i}.png" for i in range(n)],
                      captions=[f"a {c} square" for c in names], root=Path("."))


def _run(tmp_path: Path, config) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    run.start(config, {"train_rows": 24})
    return run


def _task(tmp_path: Path, **multimodal: object) -> ImageTextTask:
    config = _config(**multimodal)
    return ImageTextTask(config, _table(), torch.device("cpu"), _run(tmp_path, config))


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


# ---------------------------------------------------------------------------------------------- the task


def _batch(task, size: int) -> dict:
    """The first ``size`` training pairs as the task's loader batches them."""
    index = torch.arange(size)
    return {"index": index, "image": task.images.resident[index]}


def test_loss_trains_both_towers_and_clamps_the_temperature(tmp_path: Path) -> None:
    task = _task(tmp_path)
    model = task.build_model(seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    loss = task.loss(model, _batch(task, 8), None)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))
    loss.backward()
    assert model.image_projection.weight.grad.abs().sum() > 0
    assert model.text.projection.weight.grad.abs().sum() > 0


def test_loss_restricts_negatives_to_pseudo_label_groups(tmp_path: Path) -> None:
    task = _task(tmp_path)
    model = task.build_model(seed=1)
    batch = _batch(task, 8)

    def loss(labels: torch.Tensor | None) -> float:
        torch.manual_seed(0)  # the same augmentation for every call
        return task.loss(model, batch, labels).item()

    one_group = loss(torch.zeros(8, dtype=torch.long))
    assert one_group == pytest.approx(loss(None), rel=1e-6)
    assert loss(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])) != pytest.approx(one_group, rel=1e-3)


def test_loss_encodes_each_distinct_caption_once_with_the_same_result(tmp_path: Path) -> None:
    task = _task(tmp_path)
    model = task.build_model(seed=1)
    text_rows = []
    model.text.register_forward_hook(lambda module, args, out: text_rows.append(len(args[0])))
    torch.manual_seed(0)
    deduplicated = task.loss(model, _batch(task, 12), None)
    assert text_rows == [3]  # 12 pairs, 3 distinct captions
    torch.manual_seed(0)
    images = task.augment(to_float_images(task.images.resident[:12]))
    image_emb, text_emb = model(images, model.tokenize(_table().captions[:12]))
    expected = task.objective(image_emb, text_emb, model.logit_scale, caption_ids=task.caption_ids[:12])
    torch.testing.assert_close(deduplicated, expected)


def test_embed_is_the_normalised_image_embedding_in_eval_mode(tmp_path: Path) -> None:
    task = _task(tmp_path)
    model = task.build_model(seed=1).train()
    features = task.embed(model)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = F.normalize(model.encode_image(task.images.resident.permute(0, 3, 1, 2).float() / 255), dim=1)
    assert features.shape == (24, 8)
    torch.testing.assert_close(features, expected)
    out = EmbeddingFile(tmp_path / "embeddings.npy", 24, "float32")
    assert task.embed(model, out=out) is None  # the stage loop's path: written chunk by chunk, the same rows
    assert np.array_equal(open_embeddings(out.path, 24), features.numpy())


def test_tokenizer_is_fitted_once_per_run_and_shared(tmp_path: Path) -> None:
    config = _config()
    run = _run(tmp_path, config)
    first = ImageTextTask(config, _table(), torch.device("cpu"), run)
    assert run.is_finished(run.root / TOKENIZER_FILE)
    assert read_json(run.root / TOKENIZER_FILE)["vocab"] == first.tokenizer.vocab
    other = _table()
    other.captions = ["a purple circle"] * len(other)
    second = ImageTextTask(config, other, torch.device("cpu"), run)  # a resume reads the run's vocabulary
    assert second.tokenizer.vocab == first.tokenizer.vocab
    assert first.build_model(1).tokenizer.vocab == first.tokenizer.vocab


def test_stage_initialisation_modes(tmp_path: Path) -> None:
    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    pretrained = _task(tmp_path / "a", init="pretrained")
    assert same(pretrained.build_model(1), pretrained.initial) and same(pretrained.build_model(2), pretrained.initial)
    scratch = _task(tmp_path / "b", init="scratch")
    assert not same(scratch.build_model(1), scratch.build_model(2))
    assert same(scratch.build_model(1), scratch.build_model(1))  # seeded
    previous_task = _task(tmp_path / "c", init="previous")
    previous = previous_task.build_model(5)
    with torch.no_grad():
        previous.logit_scale.fill_(1.5)
    assert same(previous_task.build_model(6, previous), previous)
    assert same(previous_task.build_model(6, None), previous_task.initial)  # stage 1 starts from the initial model


def test_lock_towers_follows_the_config(tmp_path: Path) -> None:
    task = _task(tmp_path, lock_image=True, unlocked_image_groups=1, lock_text=True)
    trainable = _trainable(task.build_model(1))
    assert trainable == {"logit_scale", "image_projection.weight"}  # the last image group is the projection
    with pytest.raises(ConfigError, match="multimodal.unlocked_image_groups"):
        lock_towers(task.build_model(1), _config(lock_image=True, unlocked_image_groups=99).multimodal)


# ---------------------------------------------------------------------------------------------- integration


def _two_tower(tmp_path: Path, stages: int = 2) -> tuple[ImageTextTask, MultistageTwoTower]:
    task = _task(tmp_path, init="scratch")
    models = [task.build_model(s).eval() for s in range(1, stages + 1)]
    return task, MultistageTwoTower(models, "normalized-concat", stage0=task.initial.eval())


def test_multistage_two_tower_shapes_and_stage_selection(tmp_path: Path) -> None:
    task, model = _two_tower(tmp_path)
    images = torch.rand(5, 3, 16, 16)
    tokens = model.tokenize(["a red square", "a blue square"])
    with torch.no_grad():
        assert model.encode_image(images).shape == (5, 16) and model.embed_dim == 16
        assert model.encode_text(tokens).shape == (2, 16)
        assert model.select([0]).encode_image(images).shape == (5, 8)
        assert model.select([0, 1, 2]).embed_dim == 24
        assert model.select(1).members == [1]
        with_stage0 = MultistageTwoTower(list(model.stages), stage0=model.stage0, include_stage0=True)
        assert with_stage0.members == [0, 1, 2] and with_stage0.select(1).members == [0, 1]
        # Each member's block of the normalized-concat embedding is that member's own unit embedding.
        blocks = model.encode_image(images).split(8, dim=1)
        torch.testing.assert_close(blocks[1], F.normalize(model.member(2).encode_image(images), dim=1))
    assert model.embed(np.zeros((3, 16, 16, 3), dtype=np.uint8), stages=[2]).shape == (3, 8)
    for bad in ([3], [], 0):
        with pytest.raises(ValueError):
            model.select(bad)
    with pytest.raises(ValueError, match="no stage 0"):
        MultistageTwoTower(list(model.stages)).select([0])


def test_integrated_similarity_is_the_mean_of_stage_similarities(tmp_path: Path) -> None:
    _, model = _two_tower(tmp_path)
    images, tokens = torch.rand(4, 3, 16, 16), model.tokenize(["a red square", "a green square", "a blue square"])

    def cosine(m: MultistageTwoTower) -> torch.Tensor:
        return F.normalize(m.encode_image(images), dim=1) @ F.normalize(m.encode_text(tokens), dim=1).T

    with torch.no_grad():
        torch.testing.assert_close(cosine(model), (cosine(model.select([1])) + cosine(model.select([2]))) / 2)


# ---------------------------------------------------------------------------------------------- stage 0


def test_stage0_clusters_the_initial_model_and_feed_stage1(tmp_path: Path) -> None:
    config = _config(stage0=True)
    run = _run(tmp_path, config)
    task = ImageTextTask(config, _table(), torch.device("cpu"), run)
    history = run_stages(task, config, run, progress=False, initial_model=task.initial)
    assert len(history.models) == 1 and len(history.cluster_labels) == 2
    assert run.is_finished(run.stage_dir(0) / ENCODER_FILE, run.stage_dir(0) / "clusters.safetensors")
    stage0_clusters = load_arrays(run.stage_dir(0) / "clusters.safetensors")
    expected, _ = next_pseudo_labels(StageHistory([stage0_clusters["labels"]], [stage0_clusters["centroids"]]), config)
    np.testing.assert_array_equal(load_arrays(run.stage_dir(1) / PSEUDO_LABELS_FILE)["pseudo_labels"], expected)

    # A resumed run restores the recorded stage-0 weights into the (re-built) initial model.
    resumed = ImageTextTask(config, _table(), torch.device("cpu"), run)
    with torch.no_grad():
        resumed.initial.logit_scale.fill_(0.5)
    run_stages(resumed, config, run, progress=False, initial_model=resumed.initial)
    assert resumed.initial.logit_scale.item() == pytest.approx(task.initial.logit_scale.item())


# ---------------------------------------------------------------------------------------------- config and data


@pytest.mark.parametrize(("values", "key"), [
    ({"multimodal": {"enabled": True}}, "objective.name"),
    ({"objective": {"name": "clip"}}, "objective.name"),
    ({"multimodal": {"caption_drop_prob": {"texture": 1.5}}}, "multimodal.caption_drop_prob"),
    ({"multimodal": {"caption_drop_prob": {"size": 0.5}}}, "multimodal.caption_drop_prob"),
    ({"multimodal": {"caption_drop_prob": 0.5}}, "multimodal.caption_drop_prob"),
    ({"multimodal": {"model": "resnet"}}, "multimodal.model"),
    ({"multimodal": {"init": "random"}}, "multimodal.init"),
    ({"multimodal": {"embed_dim": 0}}, "multimodal.embed_dim"),
    ({"multimodal": {"unlocked_image_groups": -1}}, "multimodal.unlocked_image_groups"),
    ({"multimodal": {"init_temperature": 2.0}}, "multimodal.init_temperature"),
    ({"multimodal": {"image_resolution": 4}}, "multimodal.image_resolution"),
    ({"multimodal": {"text_width": 30, "text_heads": 4}}, "multimodal.text_heads"),
    ({"multimodal": {"integrate_stage0": True}}, "multimodal.integrate_stage0"),
    ({"multimodal": {"enabled": True, "model": "open_clip"}, "objective": {"name": "clip"}}, "multimodal.arch"),
    ({"multimodal": {"enabled": True, "model": "hf-clip"}, "objective": {"name": "clip"}}, "multimodal.pretrained"),
    ({"data": {"source": "webdataset"}}, "data.path"),
    ({"data": {"source": "coco"}}, "data.source"),
])
def test_invalid_multimodal_config(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(values)


def test_multimodal_config_defaults_and_overrides() -> None:
    assert not config_from_dict({}).multimodal.enabled  # existing configs are unchanged
    values = apply_overrides({}, ["multimodal.caption_drop_prob.texture=0.8", "multimodal.enabled=true",
                                  "objective.name=clip", "data.source=captioned-fashion-mnist"])
    config = config_from_dict(values)
    assert config.multimodal.caption_drop_prob == {"texture": 0.8}
    assert config_from_dict(config.to_dict()) == config  # what config.yaml holds reads back the same


def test_captioned_trifeature_source_drops_caption_words(tmp_path: Path) -> None:
    config = config_from_dict({"data": {"source": "captioned-trifeature", "image_size": 8, "n_train": 60,
                                        "n_test": 0}, "multimodal": {"caption_drop_prob": {"texture": 1.0}}})
    resolved = resolve_data(config, tmp_path, progress=False)
    table = load_table(resolved.data.path, image_size=8, progress=False)
    colors = table.attribute_values["color"]
    assert all(colors[c] in caption for c, caption in zip(table.attributes["color"], table.captions, strict=True))
    textures = ("stripes", "striped", "dots", "dotted", "grid", "noisy", "zigzag", "solid")
    assert not any(word in caption for caption in table.captions for word in textures)


def test_captioned_fashion_mnist(tmp_path: Path) -> None:
    try:
        root = GENERATORS["captioned-fashion-mnist"](tmp_path / "fm", n_train=20, n_test=10, image_size=12, seed=0)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    table = load_table(root, image_size=12, progress=False)
    assert table.attribute_names() == ["garment"] and len(table.attribute_values["garment"]) == 10
    assert np.bincount(table.subset("train").attributes["garment"]).tolist() == [2] * 10
    for code, caption in zip(table.attributes["garment"], table.captions, strict=True):
        assert table.attribute_values["garment"][code] in caption
    assert (table.images[..., 0] == table.images[..., 2]).all()  # grey garments


def test_import_image_text_holds_out_the_last_pairs(tmp_path: Path) -> None:
    from PIL import Image

    source = tmp_path / "i2d" / "00000"
    source.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (20, 14), (40 * i, 0, 0)).save(source / f"{i:09d}.jpg")
        (source / f"{i:09d}.txt").write_text(f"caption {i}")
    root = import_image_text("img2dataset", tmp_path / "i2d", tmp_path / "table", n_train=3, n_test=2, image_size=8)
    table = load_table(root, image_size=8, progress=False)
    assert table.captions == [f"caption {i}" for i in range(5)]  # the first n_train + n_test pairs
    assert table.split.tolist() == ["train"] * 3 + ["test"] * 2
    assert table.attribute_names() == []
    with pytest.raises(DataError, match="need more than data.n_test=5"):
        import_image_text("img2dataset", tmp_path / "i2d", tmp_path / "t2", n_train=0, n_test=5, image_size=8)
