"""The alignment corpus: complete captions, an empty corpus refused."""

from __future__ import annotations

import pytest

from mcl.errors import ConfigError
from mcl.modalities.image_text.align.corpus import build_corpus
from mcl.modalities.image_text.align.settings import AlignSettings


def test_corpus_has_complete_captions() -> None:
    corpus = build_corpus(AlignSettings(trifeature=12, digits=0, fashion_mnist=0, image_size=16))
    assert corpus.images.shape == (12, 16, 16, 3) and corpus.sizes == {"trifeature": 12}
    assert len(corpus.captions) == 12
    with pytest.raises(ConfigError, match="corpus is empty"):
        build_corpus(AlignSettings(trifeature=0, digits=0, fashion_mnist=0))
