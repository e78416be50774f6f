"""Zero-shot classification and retrieval with a fake two-tower model whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.data.table import ImageTable
from mcl.embedding import encode_images, images_to_tensor
from mcl.evaluation.zeroshot import class_embeddings, retrieval_recall, zeroshot_attributes, zeroshot_predict
from mcl.models.two_tower import TwoTowerModel

WORDS = ("red", "green", "blue")
PIXELS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (100, 0, 200)}


class ColorModel(TwoTowerModel):
    """Image embedding = mean RGB; text embedding = one-hot of the first colour word (zero if none)."""

    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        assert not self.training and not torch.is_grad_enabled()
        return images.mean(dim=(2, 3))

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([next((WORDS.index(w) for w in t.split() if w in WORDS), -1) for t in texts])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(tokens), 3)
        known = tokens >= 0
        out[known, tokens[known]] = 1.0
        return out


def _images(colors: list[str], size: int = 4) -> np.ndarray:
    return np.stack([np.full((size, size, 3), PIXELS[c], dtype=np.uint8) for c in colors])


def test_images_to_tensor() -> None:
    uint8 = _images(["red"])
    tensor = images_to_tensor(uint8)
    assert tensor.shape == (1, 3, 4, 4) and tensor.dtype == torch.float32 and tensor.max() == 1.0
    assert torch.equal(images_to_tensor(tensor), tensor)
    with pytest.raises(ValueError, match="uint8 images"):
        images_to_tensor(np.zeros((2, 3, 4, 4), dtype=np.uint8))


def test_encode_restores_train_mode_and_normalises() -> None:
    model = ColorModel().train()
    embeddings = encode_images(model, _images(["red", "purple"]), batch_size=1)
    assert model.training
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2))


def test_prompt_ensembling_averages_normalised_embeddings() -> None:
    classes = class_embeddings(ColorModel(), [["a red one", "a blue one"], ["green", "green again"]])
    expected = torch.tensor([[2 ** -0.5, 0.0, 2 ** -0.5], [0.0, 1.0, 0.0]])
    assert torch.allclose(classes, expected, atol=1e-6)


def test_zeroshot_accuracy_and_attributes() -> None:
    colors = ["red", "green", "blue", "purple"]
    prompts = [[f"a photo of a {w} thing"] for w in WORDS]
    # purple (100, 0, 200) is closest to blue, so labelling it red costs one of four.
    predictions = zeroshot_predict(ColorModel(), _images(colors), prompts)
    assert (predictions == torch.tensor([0, 1, 2, 0])).float().mean().item() == pytest.approx(0.75)
    table = ImageTable(
        images=_images(["red", "green", "blue", "red"]),
        split=np.array(["test"] * 4),
        attributes={"color": np.array([1, 0, 2, 1]), "shape": np.array([0, 1, 0, 1])},
        attribute_values={"color": ["green", "red", "blue"], "shape": ["circle", "square"]},
        paths=[str(i) for i in range(4)],
        captions=None,
        root=Path("."),
    )
    scores = zeroshot_attributes(ColorModel(), table)
    assert scores["color"] == 1.0
    # Shape prompts name no colour: all classes tie at zero and argmax picks class 0 ('circle').
    assert scores["shape"] == pytest.approx(0.5)
    # Precomputed image embeddings give the same scores; they must have one row per image.
    embeddings = encode_images(ColorModel(), table.images)
    assert zeroshot_attributes(ColorModel(), table, image_embeddings=embeddings) == scores
    with pytest.raises(ValueError, match="image_embeddings must be"):
        zeroshot_attributes(ColorModel(), table, image_embeddings=torch.zeros(3, 3))


def test_retrieval_recall_with_duplicate_captions() -> None:
    colors = ["red", "red", "green", "blue"]
    captions = ["a red square", "a red square", "a green square", "a blue square"]
    recall = retrieval_recall(ColorModel(), _images(colors), captions, ks=(1,))
    # Deduplicated, the two identical captions are one text: every retrieval is right.
    assert recall == {"image_to_text_R@1": 1.0, "text_to_image_R@1": 1.0}


def test_retrieval_recall_counts_misses() -> None:
    colors = ["red", "green", "blue", "purple"]
    captions = ["red", "green", "blue", "red"]  # the purple image is captioned "red"
    recall = retrieval_recall(ColorModel(), _images(colors), captions, ks=(1, 5))
    assert recall["image_to_text_R@1"] == pytest.approx(0.75)  # purple retrieves "blue"
    assert recall["image_to_text_R@5"] == 1.0  # k clipped to the 3 distinct captions
    assert recall["text_to_image_R@1"] == 1.0  # "red" finds image 0, "blue" the pure blue image
    with pytest.raises(ValueError, match="as many images as captions"):
        retrieval_recall(ColorModel(), _images(colors), captions[:2])
    embeddings = encode_images(ColorModel(), _images(colors))
    assert retrieval_recall(ColorModel(), _images(colors), captions, ks=(1, 5), image_embeddings=embeddings) == recall
    with pytest.raises(ValueError, match="image_embeddings must be"):
        retrieval_recall(ColorModel(), _images(colors), captions, image_embeddings=embeddings[:3])


def test_small_clip_learns_captions_end_to_end(tmp_path: Path) -> None:
    """A few CLIP steps on captioned Trifeature, then every evaluator runs on the trained model."""
    from mcl.data.captions import generate_captioned_trifeature
    from mcl.data.table import load_table
    from mcl.evaluation.mmvp import build_paired_benchmark, score_pairs
    from mcl.models.two_tower import SmallCLIP
    from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_

    torch.manual_seed(0)
    table = load_table(generate_captioned_trifeature(tmp_path / "tri", n_train=48, n_test=24, image_size=16),
                       16, progress=False)
    train = table.subset("train")
    model = SmallCLIP.from_captions(train.captions, context_length=12, embed_dim=32, image_width=0.25,
                                    text_width=32, text_layers=1, text_heads=2)
    tokens, images = model.tokenize(train.captions), images_to_tensor(train.images)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = CLIPLoss()(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clamp_logit_scale_(model.logit_scale)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    test = table.subset("test")
    assert set(zeroshot_attributes(model, test)) == {"shape", "texture", "color"}
    assert set(retrieval_recall(model, test.images, test.captions)) == {
        "image_to_text_R@1", "text_to_image_R@1", "image_to_text_R@5", "text_to_image_R@5"}
    for attribute in ("shape", "texture", "color"):
        benchmark = build_paired_benchmark(test, attribute, 4, seed=0)
        assert score_pairs(model, benchmark.images, benchmark.statements).dtype == torch.bool
