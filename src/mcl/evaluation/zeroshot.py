"""Zero-shot classification per attribute and image-text retrieval for any two-tower model.

Works with every model of the :mod:`mcl.models.two_tower` interface (``encode_image`` on [0, 1] images,
``tokenize`` + ``encode_text``). Embeddings are computed in batches, under ``no_grad``, in eval mode
(the model's previous mode is restored), and L2-normalised.

Zero-shot classification embeds several prompts per class (:func:`mcl.data.captions.zeroshot_prompts`)
and *ensembles* them as in CLIP: the normalised prompt embeddings of a class are averaged and the mean
renormalised; an image is assigned the class with the most similar ensemble embedding.

Every scorer takes an optional ``embedder`` (:class:`~mcl.embedding.Embedder`): the embeddings it gives
are used instead of encoding with ``model`` (``mcl eval`` passes embeddings each member computed once).

Example:
    >>> zeroshot_attributes(model, table.subset("test"))      # {"shape": 0.93, "color": 1.0, ...}
    >>> retrieval_recall(model, table.images, table.captions)  # {"image_to_text_R@1": ..., ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mcl.data.captions import ZEROSHOT_TEMPLATES, zeroshot_prompts
from mcl.data.table import ImageTable
from mcl.embedding import Embedder, ImageBatch, ModelEmbedder, encode_images
from mcl.errors import DataError
from mcl.objectives.core import l2_normalize


def class_embeddings(model: nn.Module, prompts_per_class: Sequence[Sequence[str]],
                     batch_size: int = 256, embedder: Embedder | None = None) -> torch.Tensor:
    """``(C, D)`` ensembled class embeddings: mean of each class's normalised prompts, renormalised."""
    return embedded_class_embeddings(embedder or ModelEmbedder(model, batch_size), prompts_per_class)


def embedded_class_embeddings(embedder: Embedder, prompts_per_class: Sequence[Sequence[str]]) -> torch.Tensor:
    """:func:`class_embeddings` with the prompts embedded by ``embedder``."""
    if any(len(prompts) == 0 for prompts in prompts_per_class):
        raise ValueError("every class needs at least one prompt")
    flat = [prompt for prompts in prompts_per_class for prompt in prompts]
    embeddings = embedder.texts(flat)
    sizes = [len(prompts) for prompts in prompts_per_class]
    return l2_normalize(torch.stack([chunk.mean(0) for chunk in embeddings.split(sizes)]))


def zeroshot_predict(model: nn.Module, images: ImageBatch, prompts_per_class: Sequence[Sequence[str]],
                     batch_size: int = 256) -> torch.Tensor:
    """``(N,)`` predicted class index of every image."""
    classes = class_embeddings(model, prompts_per_class, batch_size)
    return (encode_images(model, images, batch_size) @ classes.T).argmax(1)


def zeroshot_attributes(model: nn.Module, table: ImageTable, attributes: Sequence[str] | None = None,
                        templates: Mapping[str, Sequence[str]] = ZEROSHOT_TEMPLATES,
                        batch_size: int = 256, image_embeddings: torch.Tensor | None = None,
                        embedder: Embedder | None = None) -> dict[str, float]:
    """Zero-shot accuracy for each attribute of an image table (class names = attribute values).

    Pass ``table.subset("test")`` to evaluate on the test split. Images are embedded once, or not at
    all when ``image_embeddings`` (:func:`encode_images` of ``table.images``) are given.
    """
    embedder = embedder or ModelEmbedder(model, batch_size)
    names = list(attributes) if attributes is not None else table.attribute_names()
    unknown = [name for name in names if name not in table.attributes]
    if unknown:
        raise DataError(f"{table.root}: no attribute column(s) {unknown}; columns: {table.attribute_names()}")
    image_embeddings = _image_embeddings(embedder, table.images, image_embeddings)
    accuracies = {}
    for name in names:
        prompts = [zeroshot_prompts(name, value, templates) for value in table.attribute_values[name]]
        predictions = (image_embeddings @ class_embeddings(model, prompts, batch_size, embedder).T).argmax(1)
        accuracies[name] = float((predictions == torch.as_tensor(table.attributes[name])).float().mean())
    return accuracies


def _image_embeddings(embedder: Embedder, images: ImageBatch, given: torch.Tensor | None) -> torch.Tensor:
    """``given`` (checked to have one row per image), else ``embedder``'s embeddings of ``images``."""
    if given is None:
        return embedder.images(images)
    if given.ndim != 2 or len(given) != len(images):
        raise ValueError(f"image_embeddings must be (N, D) with N = {len(images)} images, got {tuple(given.shape)}")
    return given


def _recall_at(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    """Share of query rows with a relevant candidate among their top ``k`` (``relevant``: bool, same shape)."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return float(relevant.gather(1, top).any(1).float().mean())


def retrieval_recall(model: nn.Module, images: ImageBatch, captions: Sequence[str], ks: Sequence[int] = (1, 5),
                     batch_size: int = 256, image_embeddings: torch.Tensor | None = None,
                     embedder: Embedder | None = None) -> dict[str, float]:
    """Image->text and text->image recall@k of paired data (image ``i`` is paired with caption ``i``).

    Identical captions embed identically, so they are one text: captions are deduplicated first.
    Image->text: an image query is correct if its caption (text) is among the top ``k`` of the
    distinct captions. Text->image: each distinct caption is one query, correct if any image paired
    with it is among the top ``k`` images. Without duplicates this is the usual paired recall.
    ``image_embeddings`` (:func:`encode_images` of ``images``) skip embedding the images again.
    Returns ``{"image_to_text_R@k": ..., "text_to_image_R@k": ...}``.
    """
    if len(images) != len(captions) or not captions:
        raise ValueError(f"need as many images as captions (> 0), got {len(images)} and {len(captions)}")
    unique, caption_index = np.unique(np.asarray(captions, dtype=str), return_inverse=True)
    caption_index = torch.as_tensor(caption_index.reshape(-1))
    embedder = embedder or ModelEmbedder(model, batch_size)
    image_emb = _image_embeddings(embedder, images, image_embeddings)
    text_emb = embedder.texts([str(c) for c in unique])
    similarity = image_emb @ text_emb.T  # (N images, U captions)
    paired = caption_index[:, None] == torch.arange(len(unique))[None, :]
    results = {}
    for k in ks:
        results[f"image_to_text_R@{k}"] = _recall_at(similarity, paired, k)
        results[f"text_to_image_R@{k}"] = _recall_at(similarity.T, paired.T, k)
    return results
