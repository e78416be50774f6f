"""How well an aligned model reads Trifeature: zero-shot accuracy per attribute on fresh images.

Stored with the aligned stage 0 (``trifeature_zeroshot`` in its metadata) as a quick check of the
alignment; the prompts are those ``mcl eval`` uses.

Example:
    >>> trifeature_zeroshot(model, n=500)      # {'shape': 0.9, 'texture': 0.6, 'color': 0.95}; chance 0.1
"""

from __future__ import annotations

import numpy as np
from torch import nn

from mcl.data.captions import TRIFEATURE_ATTRIBUTES, captioned_trifeature_arrays, zeroshot_prompts
from mcl.data.trifeature import COLORS, SHAPES, TEXTURES

TRIFEATURE_VALUES = {"shape": SHAPES, "texture": TEXTURES, "color": tuple(COLORS)}


def trifeature_zeroshot(model: nn.Module, n: int = 1000, image_size: int = 32, seed: int = 7) -> dict[str, float]:
    """Zero-shot accuracy per attribute on ``n`` fresh Trifeature images (chance 0.1 each).

    Prompts are :func:`~mcl.data.captions.zeroshot_prompts` (what ``mcl eval`` uses), images drawn with
    a seed of their own, so none is in the alignment corpus (``corpus_seed``).
    """
    from mcl.evaluation.zeroshot import zeroshot_predict

    images, _, names = captioned_trifeature_arrays(n, image_size, seed)
    accuracies = {}
    for attribute in TRIFEATURE_ATTRIBUTES:
        values = TRIFEATURE_VALUES[attribute]
        labels = np.array([values.index(v) for v in names[attribute]])
        prompts = [zeroshot_prompts(attribute, value) for value in values]
        predictions = zeroshot_predict(model, images, prompts).numpy()
        accuracies[attribute] = round(float((predictions == labels).mean()), 4)
    return accuracies
