"""MMVP-VLM reading/scoring on a synthetic fixture, and the Trifeature paired benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.mmvp_fixture import write_mmvp_fixture
from mcl.data.table import ImageTable
from mcl.errors import DataError
from mcl.evaluation.mmvp import (
    IMAGES_DIR,
    QUESTIONS_FILE,
    build_paired_benchmark,
    evaluate_mmvp,
    load_mmvp,
    pair_success,
    read_mmvp,
    score_embedded_pairs,
    score_mmvp,
    score_pairs,
)
from mcl.models.two_tower import TwoTowerModel


class OneHotModel(TwoTowerModel):
    """Images -> one-hot of their dominant RGB channel; texts -> one-hot of the first known word.

    ``words`` maps a word to its embedding axis (0 red, 1 green, 2 blue, 3+ anything else).
    """

    def __init__(self, words: dict[str, int], dim: int = 8) -> None:
        super().__init__()
        self.words, self.embed_dim = words, dim
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(images.mean(dim=(2, 3)).argmax(1), self.embed_dim).float()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([next((self.words[w] for w in t.split() if w in self.words), 7) for t in texts])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens, self.embed_dim).float()


COLOR_MODEL = {"red": 0, "green": 1, "blue": 2}


def test_pair_success_needs_both_statements() -> None:
    e = torch.eye(2)
    images = torch.stack([e, e, e])  # image 0 -> axis 0, image 1 -> axis 1
    texts = torch.stack([e, e.flip(0), torch.stack([e[0], e[0]])])
    assert pair_success(images, texts).tolist() == [True, False, False]


def test_mmvp_fixture_layout_and_perfect_model(tmp_path: Path) -> None:
    root = write_mmvp_fixture(tmp_path / "mmvp", n_categories=3, pairs_per_category=2, image_size=8)
    assert (root / QUESTIONS_FILE).read_text().splitlines()[0] == '"Question ID","Type","Statement"'
    assert (root / IMAGES_DIR / "Orientation and Direction" / "1.jpg").is_file()
    pairs = read_mmvp(root)
    assert len(pairs) == 6 and pairs[0].statements == ("a photo of the square is red", "a photo of the square is green")
    result = evaluate_mmvp(OneHotModel(COLOR_MODEL), root, image_size=8)
    assert result["average"] == 1.0 and result["n_pairs"] == 6 and len(result["categories"]) == 3


def test_mmvp_scores_known_failures(tmp_path: Path) -> None:
    root = write_mmvp_fixture(tmp_path / "mmvp", n_categories=3, pairs_per_category=2, image_size=8)
    # Category 1, pair 1 (questions 5, 6): both images red -> the "green" statement cannot win.
    Image.new("RGB", (8, 8), (220, 20, 20)).save(root / IMAGES_DIR / "Presence of Specific Features" / "6.jpg")
    result = evaluate_mmvp(OneHotModel(COLOR_MODEL), root, image_size=8)
    assert result["categories"] == {"Orientation and Direction": 1.0, "Presence of Specific Features": 0.5,
                                    "State and Condition": 1.0}
    assert result["average"] == pytest.approx(2.5 / 3) and result["pair_accuracy"] == pytest.approx(5 / 6)
    # A model blind to colour words ties every pair: nothing is solved.
    assert evaluate_mmvp(OneHotModel({}), root, image_size=8)["average"] == 0.0


def test_mmvp_loaded_once_scores_like_evaluate_mmvp(tmp_path: Path) -> None:
    root = write_mmvp_fixture(tmp_path / "mmvp", n_categories=3, pairs_per_category=2, image_size=8)
    Image.new("RGB", (8, 8), (220, 20, 20)).save(root / IMAGES_DIR / "Presence of Specific Features" / "6.jpg")
    benchmark = load_mmvp(root, image_size=8)
    assert benchmark.images.shape == (6, 2, 8, 8, 3) and len(benchmark.statements) == len(benchmark.categories) == 6
    for model in (OneHotModel(COLOR_MODEL), OneHotModel({})):
        assert score_mmvp(model, benchmark) == evaluate_mmvp(model, root, image_size=8)


def test_mmvp_tolerant_header_and_errors(tmp_path: Path) -> None:
    root = write_mmvp_fixture(tmp_path / "mmvp", n_categories=1, pairs_per_category=1, image_size=8)
    csv_path = root / QUESTIONS_FILE
    csv_path.write_text("question_id,category,statement\n2,Orientation and Direction,x green\n"
                        "1,Orientation and Direction,x red\n")
    assert read_mmvp(root)[0].statements == ("a photo of x red", "a photo of x green")
    csv_path.write_text("Question ID,Statement\n1,a\n2,b\n")
    with pytest.raises(DataError, match="no 'category' column"):
        read_mmvp(root)
    header = '"Question ID","Type","Statement"\n'
    csv_path.write_text(header + "1,Orientation and Direction,a\n3,Orientation and Direction,b\n")
    with pytest.raises(DataError, match="do not form a pair"):
        read_mmvp(root)
    with pytest.raises(DataError, match="MMVP directory not found"):
        read_mmvp(tmp_path / "missing")
    (root / IMAGES_DIR / "Orientation and Direction" / "2.jpg").unlink()
    csv_path.write_text(header + "1,Orientation and Direction,a\n2,Orientation and Direction,b\n")
    with pytest.raises(DataError, match="image of question 2 not found"):
        read_mmvp(root)


def _color_shape_table() -> ImageTable:
    """Every (colour, shape) combination twice; images are pure colours (shape is invisible)."""
    colors, shapes = ["red", "green", "blue"], ["circle", "square"]
    grid = [(c, s) for c in range(3) for s in range(2)] * 2
    pixels = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], dtype=np.uint8)
    return ImageTable(
        images=np.stack([np.broadcast_to(pixels[c], (4, 4, 3)) for c, _ in grid]).copy(),
        split=np.array(["test"] * len(grid)),
        attributes={"color": np.array([c for c, _ in grid]), "shape": np.array([s for _, s in grid])},
        attribute_values={"color": colors, "shape": shapes},
        paths=[str(i) for i in range(len(grid))],
        captions=None,
        root=Path("."),
    )


def test_paired_benchmark_pairs_differ_in_exactly_one_attribute() -> None:
    table = _color_shape_table()
    benchmark = build_paired_benchmark(table, "color", seed=1)
    assert len(benchmark.rows) == 6  # 2 shape groups x 6 images -> 3 disjoint pairs each
    for (a, b), (s_a, s_b) in zip(benchmark.rows, benchmark.statements, strict=True):
        assert table.attributes["color"][a] != table.attributes["color"][b]
        assert table.attributes["shape"][a] == table.attributes["shape"][b]
        assert s_a.split()[-1] == s_b.split()[-1] and s_a.split()[1] != s_b.split()[1]
    assert np.array_equal(benchmark.images[0, 1], table.images[benchmark.rows[0, 1]])
    assert len(build_paired_benchmark(table, "color", n_pairs=2).rows) == 2
    with pytest.raises(DataError, match="no attribute column 'size'"):
        build_paired_benchmark(table, "size")


def test_paired_statements_of_marked_trifeature_read_like_its_captions(tmp_path: Path) -> None:
    from mcl.data.captions import generate_marked_trifeature
    from mcl.data.table import load_table

    table = load_table(generate_marked_trifeature(tmp_path / "marked", 40, 200, 16, seed=0), 16,
                       progress=False).subset("test")
    benchmark = build_paired_benchmark(table, "mark", n_pairs=3)
    assert len(benchmark.statements) == 3
    for first, second in benchmark.statements:
        assert " with a mark in the " in first and first.endswith(" corner")  # a caption, not a word list
        assert first.split(" with a mark")[0] == second.split(" with a mark")[0] and first != second


def test_paired_benchmark_scores_per_attribute() -> None:
    # Sees colour, is blind to shape: colour pairs all solved, shape pairs none.
    table, model = _color_shape_table(), OneHotModel(COLOR_MODEL)
    scores = {}
    for attribute in ("color", "shape"):
        benchmark = build_paired_benchmark(table, attribute)
        scores[attribute] = score_pairs(model, benchmark.images, benchmark.statements).float().mean().item()
    assert scores == {"color": 1.0, "shape": 0.0}


def test_score_embedded_pairs_matches_score_pairs() -> None:
    from mcl.embedding import encode_images

    table, model = _color_shape_table(), OneHotModel(COLOR_MODEL)
    benchmark = build_paired_benchmark(table, "color", seed=1)
    embedded = encode_images(model, table.images)[torch.as_tensor(benchmark.rows)]
    solved = score_embedded_pairs(model, embedded, benchmark.statements)
    assert torch.equal(solved, score_pairs(model, benchmark.images, benchmark.statements)) and bool(solved.all())
    with pytest.raises(ValueError, match=r"must be \(P, 2, D\)"):
        score_embedded_pairs(model, embedded[:2], benchmark.statements)


def test_paired_benchmark_on_trifeature(tmp_path: Path) -> None:
    from mcl.data.table import load_table
    from mcl.data.trifeature import generate_trifeature

    table = load_table(generate_trifeature(tmp_path / "tri", n_train=0, n_test=120, image_size=8, progress=False),
                       8, progress=False)
    benchmark = build_paired_benchmark(table, "texture", n_pairs=5)
    assert len(benchmark.rows) == 5 and benchmark.images.shape == (5, 2, 8, 8, 3)
    for first, second in benchmark.statements:
        differing = [(a, b) for a, b in zip(first.split(), second.split(), strict=True) if a != b]
        assert len(differing) == 1, (first, second)  # only the texture adjective differs
