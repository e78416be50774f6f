"""MMVP-VLM (Tong et al., CVPR 2024) and an MMVP-style paired benchmark built from Trifeature.

MMVP-VLM probes visual patterns that CLIP-style models miss: 135 pairs of images that CLIP embeds
almost identically but that differ in one visual detail, each with a statement true of only one of
them, in 9 categories x 15 pairs. Published layout::

    <mmvp_dir>/Questions.csv                    # "Question ID","Type","Statement" (270 rows)
    <mmvp_dir>/MLLM_VLM Images/<Type>/<id>.jpg  # one image per question id

Rows ``(1, 2), (3, 4), ...`` (consecutive ids) form a pair; statement ``i`` describes image ``i``.
Scoring (as the official script): the prompt is ``"a photo of " + statement``; for each pair the
2x2 image-text similarity is computed and, for each statement, a softmax over the two images; a pair
counts as solved only when *both* statements give their own image the higher probability (ties
fail). Score per category = share of solved pairs; ``average`` = mean over categories.

The Trifeature version (:func:`build_paired_benchmark`) pairs images that differ in exactly one
attribute, all other attributes equal, with the two full captions as statements, scored the same way.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl.data.captions import (
    MARKED_TRIFEATURE_ATTRIBUTES,
    MARKED_TRIFEATURE_TEMPLATES,
    TRIFEATURE_ATTRIBUTES,
    TRIFEATURE_TEMPLATES,
    attribute_words,
    fix_articles,
    render_template,
)
from mcl.data.image_text import decode_image
from mcl.data.table import ImageTable
from mcl.embedding import Embedder, ModelEmbedder
from mcl.errors import DataError

QUESTIONS_FILE = "Questions.csv"
IMAGES_DIR = "MLLM_VLM Images"
PROMPT_PREFIX = "a photo of "
MMVP_BATCH_SIZE = 64  # images and statements per forward pass (the scores' last bits depend on it)
MMVP_CATEGORIES = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)
# Accepted spellings of the three columns (compared lowercase, without spaces/underscores/dashes).
_COLUMN_ALIASES = {
    "id": ("questionid", "qid", "id", "question"),
    "category": ("type", "category", "questiontype"),
    "statement": ("statement", "text", "caption", "options"),
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class MMVPPair:
    """Two images and the statement true of each (statement ``s`` describes ``images[s]``)."""

    category: str
    images: tuple[Path, Path]
    statements: tuple[str, str]


# ---------------------------------------------------------------------------------------------- scoring


def pair_success(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """``(P,)`` bool: both statements prefer their own image. Embeddings ``(P, 2, D)``, normalised.

    ``probs[p, s] = softmax over images of similarity(statement s, image i)``; statement ``s`` is right
    when ``probs[p, s, s] > 0.5``, i.e. its own image is strictly more similar.
    """
    similarity = text_emb @ image_emb.transpose(1, 2)  # (P, statement, image)
    probs = similarity.softmax(dim=-1)
    return (probs[:, 0, 0] > 0.5) & (probs[:, 1, 1] > 0.5)


def score_pairs(model: nn.Module, images: np.ndarray, statements: Sequence[tuple[str, str]],
                batch_size: int = 256, embedder: Embedder | None = None) -> torch.Tensor:
    """Solved flag of each pair: ``images`` uint8 ``(P, 2, H, W, 3)``, ``statements`` P (s0, s1) tuples.

    ``embedder``: embeddings to use instead of encoding with ``model`` (:class:`~mcl.embedding.Embedder`).
    """
    if len(images) != len(statements):
        raise ValueError(f"{len(images)} image pairs but {len(statements)} statement pairs")
    pairs = len(images)
    embedder = embedder or ModelEmbedder(model, batch_size)
    image_emb = embedder.images(images.reshape(2 * pairs, *images.shape[2:]))
    return score_embedded_pairs(model, image_emb.view(pairs, 2, -1), statements, batch_size, embedder)


def score_embedded_pairs(model: nn.Module, image_emb: torch.Tensor, statements: Sequence[tuple[str, str]],
                         batch_size: int = 256, embedder: Embedder | None = None) -> torch.Tensor:
    """:func:`score_pairs` from image embeddings already computed: normalised ``(P, 2, D)``."""
    if image_emb.ndim != 3 or image_emb.shape[:2] != (len(statements), 2):
        raise ValueError(f"image embeddings must be (P, 2, D) with P = {len(statements)} statement pairs, "
                         f"got {tuple(image_emb.shape)}")
    text_emb = (embedder or ModelEmbedder(model, batch_size)).texts([s for pair in statements for s in pair])
    return pair_success(image_emb, text_emb.view(len(statements), 2, -1))


def _summarise(categories: Sequence[str], solved: torch.Tensor) -> dict[str, object]:
    per_category = {}
    for category in dict.fromkeys(categories):
        rows = torch.tensor([c == category for c in categories])
        per_category[category] = float(solved[rows].float().mean())
    return {"average": float(np.mean(list(per_category.values()))), "pair_accuracy": float(solved.float().mean()),
            "n_pairs": len(categories), "categories": per_category}


# ---------------------------------------------------------------------------------------------- MMVP-VLM


def _normalise_header(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _column_indices(csv_path: Path, header: list[str]) -> dict[str, int]:
    normalised = [_normalise_header(name) for name in header]
    indices = {}
    for column, aliases in _COLUMN_ALIASES.items():
        found = next((normalised.index(a) for a in aliases if a in normalised), None)
        if found is None:
            raise DataError(f"{csv_path} line 1: no {column!r} column (expected one of {list(aliases)}; "
                            f"got {header})")
        indices[column] = found
    return indices


def _read_questions(csv_path: Path) -> list[tuple[int, str, str]]:
    """``(question id, category, statement)`` rows in file order."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{csv_path}: file not found; expected the MMVP-VLM {QUESTIONS_FILE}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    columns = _column_indices(csv_path, [h.strip() for h in header])
    rows = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path} line {reader.line_num}"
        try:
            qid = int(row[columns["id"]])
            category, statement = row[columns["category"]].strip(), row[columns["statement"]].strip()
        except (IndexError, ValueError):
            raise DataError(f"{where}: expected an integer question id, a type and a statement; got {row}") from None
        rows.append((qid, category, statement))
    if not rows:
        raise DataError(f"{csv_path}: no questions")
    return rows


def _image_path(image_dir: Path, category: str, qid: int) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        path = image_dir / category / f"{qid}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"{image_dir / category / f'{qid}.jpg'}: image of question {qid} not found")


def read_mmvp(mmvp_dir: str | os.PathLike) -> list[MMVPPair]:
    """Pairs of an MMVP-VLM directory, checked: ids ``2k-1, 2k`` consecutive, same category, images present."""
    root = Path(mmvp_dir)
    if not root.is_dir():
        raise DataError(f"{root}: MMVP directory not found")
    csv_path = root / QUESTIONS_FILE
    rows = sorted(_read_questions(csv_path))
    if len(rows) % 2:
        raise DataError(f"{csv_path}: {len(rows)} questions; MMVP pairs need an even number")
    pairs = []
    for (id_a, cat_a, text_a), (id_b, cat_b, text_b) in zip(rows[::2], rows[1::2], strict=True):
        if id_b != id_a + 1 or id_a % 2 != 1 or cat_a != cat_b:
            raise DataError(f"{csv_path}: questions {id_a} ({cat_a!r}) and {id_b} ({cat_b!r}) do not form a pair; "
                            "expected ids 2k-1, 2k of the same type")
        images = (_image_path(root / IMAGES_DIR, cat_a, id_a), _image_path(root / IMAGES_DIR, cat_a, id_b))
        pairs.append(MMVPPair(cat_a, images, (PROMPT_PREFIX + text_a, PROMPT_PREFIX + text_b)))
    return pairs


def _load_pair_images(pairs: Sequence[MMVPPair], image_size: int) -> np.ndarray:
    images = np.empty((len(pairs), 2, image_size, image_size, 3), dtype=np.uint8)
    for p, pair in enumerate(pairs):
        for i, path in enumerate(pair.images):
            try:
                images[p, i] = decode_image(path, image_size)
            except Exception as exc:  # Pillow raises many unrelated types for corrupt files
                raise DataError(f"{path}: image cannot be read ({type(exc).__name__}: {exc})") from None
    return images


@dataclass
class MMVPBenchmark:
    """MMVP-VLM read and decoded once (:func:`load_mmvp`), to score any number of models."""

    categories: list[str]
    images: np.ndarray  # uint8 (P, 2, H, W, 3)
    statements: list[tuple[str, str]]


def load_mmvp(mmvp_dir: str | os.PathLike, image_size: int = 224) -> MMVPBenchmark:
    """Read and check an MMVP-VLM directory and decode its images, centre-cropped to ``image_size``."""
    pairs = read_mmvp(mmvp_dir)
    return MMVPBenchmark([p.category for p in pairs], _load_pair_images(pairs, image_size),
                         [p.statements for p in pairs])


def score_mmvp(model: nn.Module, benchmark: MMVPBenchmark, batch_size: int = MMVP_BATCH_SIZE,
               embedder: Embedder | None = None) -> dict[str, object]:
    """:func:`evaluate_mmvp`'s scores of a loaded benchmark (``embedder``: see :func:`score_pairs`)."""
    return _summarise(benchmark.categories,
                      score_pairs(model, benchmark.images, benchmark.statements, batch_size, embedder))


def evaluate_mmvp(model: nn.Module, mmvp_dir: str | os.PathLike, image_size: int = 224,
                  batch_size: int = MMVP_BATCH_SIZE) -> dict[str, object]:
    """Score a two-tower model on MMVP-VLM.

    Images are centre-cropped and resized to ``image_size`` before the model (which then applies its
    own preprocessing). Returns ``{"average", "pair_accuracy", "n_pairs", "categories": {name: score}}``.
    To score several models, :func:`load_mmvp` once and :func:`score_mmvp` each.
    """
    return score_mmvp(model, load_mmvp(mmvp_dir, image_size), batch_size)


# ---------------------------------------------------------------------------------------------- Trifeature


@dataclass
class PairedBenchmark:
    """Image pairs that differ in one attribute, with their statements (row-aligned)."""

    attribute: str
    images: np.ndarray  # uint8 (P, 2, H, W, 3)
    statements: list[tuple[str, str]]
    rows: np.ndarray  # (P, 2) table rows of the two images


# The statement template of a table whose attribute columns are exactly these (the generated captioned tables).
_DEFAULT_TEMPLATES = {frozenset(TRIFEATURE_ATTRIBUTES): TRIFEATURE_TEMPLATES[0],
                      frozenset(MARKED_TRIFEATURE_ATTRIBUTES): MARKED_TRIFEATURE_TEMPLATES[0]}


def _caption(table: ImageTable, row: int, template: str | None) -> str:
    values = {name: table.attribute_values[name][table.attributes[name][row]] for name in table.attributes}
    template = template or _DEFAULT_TEMPLATES.get(frozenset(values))
    if template is None:
        return fix_articles("a " + " ".join(values.values()))
    return render_template(template, attribute_words(values))


def build_paired_benchmark(table: ImageTable, attribute: str, n_pairs: int | None = None, seed: int = 0,
                           template: str | None = None) -> PairedBenchmark:
    """Pairs of images equal in every attribute but ``attribute``, each with its full caption.

    Images are grouped by the values of all other attributes; within a group, pairs with different
    ``attribute`` values are drawn at random (each image used at most once). ``n_pairs`` caps the
    count (None: as many as found). The statements are ``template`` filled with each image's
    attributes (default: "a {color} {texture_adj} {shape}" for Trifeature, the same "[ with a mark in the
    {mark} corner]" for marked Trifeature, else "a" + the values in column order), so the two statements
    differ exactly in the word for ``attribute``.
    """
    if attribute not in table.attributes:
        raise DataError(f"{table.root}: no attribute column {attribute!r}; columns: {table.attribute_names()}")
    rng = np.random.default_rng(seed)
    rows = _differing_pairs(table, attribute, rng)[:n_pairs]
    if len(rows) == 0:
        raise DataError(f"{table.root}: no image pairs differ only in {attribute!r}")
    statements = [(_caption(table, a, template), _caption(table, b, template)) for a, b in rows]
    images = np.asarray(table.images[rows.reshape(-1)]).reshape(len(rows), 2, *table.images.shape[1:])
    return PairedBenchmark(attribute, images, statements, rows)


def _differing_pairs(table: ImageTable, attribute: str, rng: np.random.Generator) -> np.ndarray:
    """``(P, 2)`` rows, in random order, of pairs equal in all attributes but ``attribute``."""
    others = [codes for name, codes in table.attributes.items() if name != attribute]
    keys = np.stack(others, axis=1) if others else np.zeros((len(table), 1), dtype=np.int64)
    _, groups = np.unique(keys, axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    pairs: list[tuple[int, int]] = []
    for group in range(int(groups.max()) + 1):
        pairs += _pairs_in_group(np.flatnonzero(groups == group), table.attributes[attribute], rng)
    rows = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return rows[rng.permutation(len(rows))]


def _pairs_in_group(rows: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Disjoint random pairs of rows whose ``codes`` differ."""
    pairs, unused = [], list(rng.permutation(rows))
    while unused:
        first = unused.pop()
        partner = next((i for i, row in enumerate(unused) if codes[row] != codes[first]), None)
        if partner is not None:
            pairs.append((int(first), int(unused.pop(partner))))
    return pairs
