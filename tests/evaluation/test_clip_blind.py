"""CLIP-blind pair mining and MMVP pair scoring on a hand-made table with fake embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.data.table import ImageTable
from mcl.errors import DataError
from mcl.evaluation.clip_blind import evaluate_clip_blind, mine_clip_blind_pairs, score_clip_blind
from mcl.models.two_tower import TwoTowerModel

# Six rows, attributes color (red/blue) and shape (circle/square):
#   0 red circle, 1 blue circle, 2 red square, 3 blue square, 4 red circle, 5 blue circle
COLOR = np.array([0, 1, 0, 1, 0, 1])
SHAPE = np.array([0, 0, 1, 1, 0, 0])


def tiny_table(images: np.ndarray | None = None) -> ImageTable:
    n = len(COLOR)
    return ImageTable(images=images if images is not None else np.zeros((n, 4, 4, 3), np.uint8),
                      split=np.array(["test"] * n), attributes={"color": COLOR, "shape": SHAPE},
                      attribute_values={"color": ["red", "blue"], "shape": ["circle", "square"]},
                      paths=[f"{i}.png" for i in range(n)], captions=None, root=Path("tiny"))


def fake_embeddings() -> torch.Tensor:
    """Hand-picked 2-d directions: the similarities below decide the mined pairs."""
    angles = torch.tensor([0.0, 0.12, 0.5, 0.53, 1.2, 1.05])  # radians
    return torch.stack([angles.cos(), angles.sin()], dim=1) * 3.0  # unnormalised on purpose


def test_mining_picks_most_similar_pairs_differing_in_one_attribute() -> None:
    pairs = mine_clip_blind_pairs(fake_embeddings(), tiny_table(), per_attribute=5)
    # color pairs: same shape, different colour. Candidates (angle gap): 0-1 (.12), 0-5 (1.05), 1-4 (1.08),
    # 4-5 (.15), 2-3 (.03). Greedy, most similar first, each row once: 2-3, 0-1, 4-5.
    assert pairs["color"].tolist() == [[2, 3], [0, 1], [4, 5]]
    # shape pairs: same colour, different shape. red: 0-2 (.5), 2-4 (.7); blue: 1-3 (.41), 3-5 (.52).
    # Greedy: 1-3, 0-2; then 3-5 and 2-4 reuse a row, so 4 and 5 are left without partner.
    assert pairs["shape"].tolist() == [[1, 3], [0, 2]]
    for rows in pairs["color"]:  # exactly one attribute differs
        assert COLOR[rows[0]] != COLOR[rows[1]] and SHAPE[rows[0]] == SHAPE[rows[1]]


def test_mining_is_capped_deterministic_and_checks_input() -> None:
    first = mine_clip_blind_pairs(fake_embeddings().numpy(), tiny_table(), per_attribute=1, attributes=["color"])
    assert list(first) == ["color"] and first["color"].tolist() == [[2, 3]]
    again = mine_clip_blind_pairs(fake_embeddings(), tiny_table(), per_attribute=1, attributes=["color"])
    assert np.array_equal(first["color"], again["color"])
    with pytest.raises(ValueError, match="6 table rows"):
        mine_clip_blind_pairs(torch.zeros(5, 2), tiny_table())
    with pytest.raises(DataError, match="texture"):
        mine_clip_blind_pairs(fake_embeddings(), tiny_table(), attributes=["texture"])


class ColourShapeModel(TwoTowerModel):
    """Images: axis 0 = red channel mean, axis 1 = blue, axis 2 = 'squareness' (green channel).

    Texts: 'red' -> axis 0, 'blue' -> axis 1, 'square' -> axis 2, 'circle' -> -axis 2 (so shape is
    read from the green channel's sign around 0.5); anything else -> zeros.
    """

    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(2, 3))
        return torch.stack([mean[:, 0], mean[:, 2], mean[:, 1] - 0.5], dim=1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        table = {"red": [1.0, 0, 0], "blue": [0, 1.0, 0], "square": [0, 0, 1.0], "circle": [0, 0, -1.0]}
        return torch.tensor([next((table[w] for w in t.split() if w in table), [0.0, 0, 0]) for t in texts])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + 1e-6  # never exactly zero (normalised later)


def coloured_images(blind_shape: bool) -> np.ndarray:
    """Red/blue by channel; squares green 255, circles 0 (or all 128 when shape is invisible)."""
    images = np.zeros((6, 4, 4, 3), np.uint8)
    images[COLOR == 0, ..., 0] = 255
    images[COLOR == 1, ..., 2] = 255
    images[..., 1] = 128 if blind_shape else np.where(SHAPE == 1, 255, 0)[:, None, None]
    return images


def test_scores_use_each_value_statement() -> None:
    pairs = mine_clip_blind_pairs(fake_embeddings(), tiny_table(), per_attribute=5)
    seeing = score_clip_blind(ColourShapeModel(), tiny_table(coloured_images(blind_shape=False)), pairs)
    assert seeing == {"color": 1.0, "shape": 1.0}
    blind = tiny_table(coloured_images(blind_shape=True))
    assert score_clip_blind(ColourShapeModel(), blind, pairs) == {"color": 1.0, "shape": 0.0}
    # Precomputed embeddings give the same answer; the summary averages attributes.
    embeddings = ColourShapeModel().encode_image(torch.from_numpy(blind.images).permute(0, 3, 1, 2).float() / 255)
    assert score_clip_blind(ColourShapeModel(), blind, pairs, image_embeddings=embeddings) == {"color": 1.0,
                                                                                                "shape": 0.0}
    summary = evaluate_clip_blind(ColourShapeModel(), blind, pairs)
    assert summary["average"] == 0.5 and summary["n_pairs"] == 5
    assert summary["pair_accuracy"] == pytest.approx(3 / 5)


def test_attribute_without_pairs_scores_nan() -> None:
    pairs = {"color": np.zeros((0, 2), np.int64), "shape": np.array([[0, 2]])}
    scores = score_clip_blind(ColourShapeModel(), tiny_table(coloured_images(False)), pairs)
    assert np.isnan(scores["color"]) and scores["shape"] == 1.0
