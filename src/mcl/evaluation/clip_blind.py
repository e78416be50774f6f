"""MMVP-style "CLIP-blind" pairs for any captioned table with attribute columns (Tong et al. 2024, Sec. 2).

MMVP picks image pairs that CLIP embeds almost identically although they differ visibly, and asks
for each image the statement naming its own difference. Here the pairs are mined from a table:

* **mining** (:func:`mine_clip_blind_pairs`): for each attribute ``a``, candidate pairs are the rows
  equal in every other attribute and different in ``a`` (they differ in exactly one attribute). The
  ``per_attribute`` candidates whose *stage-0* image embeddings have the highest cosine similarity
  are kept, greedily, each row in at most one pair of an attribute (ties by row order:
  deterministic). Per group of rows sharing the other attributes, a ``(g, g)`` similarity block
  (groups with more than :data:`MAX_CANDIDATES_PER_GROUP` candidates keep only their most similar).
* **scoring** (:func:`score_clip_blind`): each image of a pair gets the statement of its own value of
  ``a``, the ensembled zero-shot prompts of the value (:func:`~mcl.data.captions.zeroshot_prompts`,
  e.g. "a photo of a striped object"); a pair is solved when both statements prefer their own image
  (:func:`~mcl.evaluation.mmvp.pair_success`). The score of an attribute is its share of solved pairs.

Pairs are ``{attribute: (P, 2) int64 table rows}``, storable as is with :func:`mcl.files.save_arrays`,
so every representation of a run (stage-0, stage-k, mcl-k, finetune-k) is scored on the same pairs.

Example:
    >>> test = table.subset("test")
    >>> pairs = mine_clip_blind_pairs(encode_images(stage0, test.images), test, per_attribute=100)
    >>> score_clip_blind(model, test, pairs)        # {"shape": 0.71, "texture": 0.18, "color": 0.96}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mcl.data.captions import ZEROSHOT_TEMPLATES, zeroshot_prompts
from mcl.data.table import ImageTable
from mcl.embedding import Embedder, ModelEmbedder
from mcl.errors import DataError
from mcl.evaluation.mmvp import pair_success
from mcl.evaluation.zeroshot import embedded_class_embeddings
from mcl.objectives.core import l2_normalize

Pairs = dict[str, np.ndarray]
# Candidates kept per group of rows (its most similar ones): bounds memory on huge groups (a table
# with one attribute is one group); below it the greedy choice sees every candidate.
MAX_CANDIDATES_PER_GROUP = 1_000_000

__all__ = ["Pairs", "evaluate_clip_blind", "mine_clip_blind_pairs", "score_clip_blind"]


def _attribute_names(table: ImageTable, attributes: Sequence[str] | None) -> list[str]:
    names = list(attributes) if attributes is not None else table.attribute_names()
    unknown = [name for name in names if name not in table.attributes]
    if unknown:
        raise DataError(f"{table.root}: no attribute column(s) {unknown}; columns: {table.attribute_names()}")
    if not names:
        raise DataError(f"{table.root}: CLIP-blind pairs need attribute columns; the table has none")
    return names


def _candidates(embeddings: torch.Tensor, table: ImageTable, attribute: str,
                keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(C, 2)`` and similarities ``(C,)`` of pairs differing in ``attribute`` only (best ``keep`` per group)."""
    others = [codes for name, codes in table.attributes.items() if name != attribute]
    keys = np.stack(others, axis=1) if others else np.zeros((len(table), 1), dtype=np.int64)
    _, groups = np.unique(keys, axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    codes = torch.as_tensor(np.asarray(table.attributes[attribute]))
    found_rows, found_sims = [], []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        if len(rows) < 2:
            continue
        index = torch.as_tensor(rows)
        similarity = embeddings[index] @ embeddings[index].T
        valid = torch.triu(codes[index][:, None] != codes[index][None, :], diagonal=1)
        first, second = valid.nonzero(as_tuple=True)  # row-major: deterministic order
        sims = similarity[first, second]
        if len(sims) > keep:  # only the best few of a big group can be chosen
            top = _stable_top(sims, keep)
            first, second, sims = first[top], second[top], sims[top]
        found_rows.append(np.stack([rows[first.numpy()], rows[second.numpy()]], axis=1))
        found_sims.append(sims.numpy())
    if not found_rows:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(found_rows).astype(np.int64), np.concatenate(found_sims)


def _stable_top(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values, ties broken by position (torch.topk's are unspecified)."""
    return torch.as_tensor(np.argsort(-values.numpy(), kind="stable")[:k])


def mine_clip_blind_pairs(stage0_image_embeddings: torch.Tensor | np.ndarray, table: ImageTable,
                          per_attribute: int = 100, attributes: Sequence[str] | None = None) -> Pairs:
    """The ``per_attribute`` most similar pairs (stage-0 embeddings) differing in exactly one attribute.

    ``stage0_image_embeddings``: ``(N, D)``, one row per table row (normalised here). Returns
    ``{attribute: (P, 2) int64 rows}``, most similar first, ``P <= per_attribute`` (fewer when the
    table has fewer such pairs; an attribute with none gets an empty array).
    """
    if per_attribute < 1:
        raise ValueError(f"per_attribute must be >= 1, got {per_attribute}")
    embeddings = torch.as_tensor(np.asarray(stage0_image_embeddings), dtype=torch.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(table):
        raise ValueError(f"stage-0 embeddings must be (N, D) with N = {len(table)} table rows, "
                         f"got {tuple(embeddings.shape)}")
    embeddings = l2_normalize(embeddings)
    pairs: Pairs = {}
    for attribute in _attribute_names(table, attributes):
        rows, sims = _candidates(embeddings, table, attribute, keep=MAX_CANDIDATES_PER_GROUP)
        order = np.argsort(-sims, kind="stable")
        used: set[int] = set()
        chosen = []
        for a, b in rows[order]:
            if a in used or b in used:
                continue
            chosen.append((a, b))
            used.update((int(a), int(b)))
            if len(chosen) == per_attribute:
                break
        pairs[attribute] = np.array(chosen, dtype=np.int64).reshape(-1, 2)
    return pairs


def score_clip_blind(model: nn.Module, table: ImageTable, pairs: Mapping[str, np.ndarray],
                     templates: Mapping[str, Sequence[str]] = ZEROSHOT_TEMPLATES, batch_size: int = 256,
                     image_embeddings: torch.Tensor | None = None,
                     embedder: Embedder | None = None) -> dict[str, float]:
    """Share of solved pairs per attribute for a two-tower ``model`` (NaN for an attribute without pairs).

    ``image_embeddings``: the model's normalised ``(N, D)`` embeddings of every table row, if already
    computed; otherwise only the rows in ``pairs`` are embedded. ``embedder``
    (:class:`~mcl.embedding.Embedder`): embeddings to use instead of encoding with ``model``.
    """
    solved = _solved(embedder or ModelEmbedder(model, batch_size), table, pairs, templates, image_embeddings)
    return {attribute: float(flags.float().mean()) if len(flags) else float("nan")
            for attribute, flags in solved.items()}


def _solved(embedder: Embedder, table: ImageTable, pairs: Mapping[str, np.ndarray],
            templates: Mapping[str, Sequence[str]], image_embeddings: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Solved flag of every pair, per attribute."""
    _attribute_names(table, list(pairs))
    all_rows = np.unique(np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in pairs.values()]
                                        or [np.zeros(0, dtype=np.int64)]))
    if len(all_rows) and (all_rows[0] < 0 or all_rows[-1] >= len(table)):
        raise ValueError(f"pair rows must index the table's {len(table)} rows")
    if image_embeddings is not None:
        if image_embeddings.ndim != 2 or len(image_embeddings) != len(table):
            raise ValueError(f"image_embeddings must be (N, D) with N = {len(table)}, got "
                             f"{tuple(image_embeddings.shape)}")
        lookup = l2_normalize(image_embeddings.float())
    else:
        lookup = torch.zeros(len(table), 0)
        if len(all_rows):
            embedded = embedder.images(table.images[all_rows])
            lookup = torch.zeros(len(table), embedded.shape[1])
            lookup[torch.as_tensor(all_rows)] = embedded
    solved = {}
    for attribute, rows in pairs.items():
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        if len(rows) == 0:
            solved[attribute] = torch.zeros(0, dtype=torch.bool)
            continue
        values = table.attribute_values[attribute]
        prompts = [zeroshot_prompts(attribute, value, templates) for value in values]
        classes = embedded_class_embeddings(embedder, prompts)  # (V, D), one statement per value
        codes = torch.as_tensor(np.asarray(table.attributes[attribute])[rows])  # (P, 2)
        solved[attribute] = pair_success(lookup[torch.as_tensor(rows)], classes[codes])
    return solved


def evaluate_clip_blind(model: nn.Module, table: ImageTable, pairs: Mapping[str, np.ndarray],
                        templates: Mapping[str, Sequence[str]] = ZEROSHOT_TEMPLATES,
                        batch_size: int = 256) -> dict[str, object]:
    """:func:`score_clip_blind` as MMVP summaries do: ``{"average", "pair_accuracy", "n_pairs", "categories"}``.

    ``average`` is the mean over attributes with pairs, ``pair_accuracy`` over all pairs.
    """
    solved = _solved(ModelEmbedder(model, batch_size), table, pairs, templates, None)
    categories = {a: float(flags.float().mean()) for a, flags in solved.items() if len(flags)}
    flags = torch.cat(list(solved.values())) if solved else torch.zeros(0, dtype=torch.bool)
    return {"average": float(np.mean(list(categories.values()))) if categories else float("nan"),
            "pair_accuracy": float(flags.float().mean()) if len(flags) else float("nan"),
            "n_pairs": int(len(flags)), "categories": categories}
