"""A word-level tokenizer fitted on a caption corpus and a small transformer text tower.

Built for synthetic captions ("a red striped triangle"): their vocabulary is a few dozen words, so a
word-level vocabulary is exact where a BPE would only add noise. Unknown words map to ``<unk>``.

Example:
    >>> tokenizer = WordTokenizer.fit(train_captions, context_length=16)
    >>> tokens = tokenizer(["a red striped triangle"])          # (1, 16) int64
    >>> tower = TextTransformer(tokenizer.vocab_size, tokenizer.context_length, output_dim=128,
    ...                         pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
    >>> embedding = tower(tokens)                                # (1, 128)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from mcl.errors import DataError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lowercase and split into words (letters/digits, with an optional 's suffix) and punctuation."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Word-level tokenizer: ``<bos> words... <eos>`` padded with ``<pad>`` to ``context_length``.

    Ids 0-3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``; words follow in order of decreasing corpus
    frequency (ties alphabetical) so fitting is deterministic. Texts longer than the context are
    truncated but always keep their ``<eos>`` (the text tower may pool there).
    """

    pad_id, unk_id, bos_id, eos_id = range(len(SPECIAL_TOKENS))

    def __init__(self, words: Sequence[str], context_length: int = 32) -> None:
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (bos, a word, eos), got {context_length}")
        vocab = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.vocab: list[str] = vocab
        self.index = {word: i for i, word in enumerate(vocab)}
        self.context_length = context_length

    @classmethod
    def fit(cls, texts: Iterable[str], context_length: int = 32, min_count: int = 1,
            max_words: int | None = None) -> WordTokenizer:
        """Build the vocabulary from a corpus (words seen at least ``min_count`` times)."""
        counts = Counter(word for text in texts for word in split_words(text))
        if not counts:
            raise DataError("cannot fit a tokenizer: the caption corpus is empty")
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_words], context_length)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of one text: ``<bos>``, words (truncated), ``<eos>``; no padding."""
        ids = [self.index.get(word, self.unk_id) for word in split_words(text)]
        return [self.bos_id, *ids[: self.context_length - 2], self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` joined by spaces; ``<pad>``, ``<bos>`` and ``<eos>`` dropped, ``<unk>`` kept."""
        skip = (self.pad_id, self.bos_id, self.eos_id)
        return " ".join(self.vocab[i] for i in ids if i not in skip)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), context_length)`` int64 token ids."""
        tokens = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (``from_dict`` inverts it)."""
        return {"type": "word", "context_length": self.context_length, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WordTokenizer:
        """Rebuild a tokenizer saved with :meth:`to_dict`."""
        try:
            vocab, context_length = state["vocab"], int(state["context_length"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"tokenizer state: missing or invalid key {exc}") from None
        if list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise DataError(f"tokenizer state: vocab must start with {', '.join(SPECIAL_TOKENS)}")
        return cls(vocab[len(SPECIAL_TOKENS):], context_length)


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, L, D)`` states over the positions where ``keep`` (``(B, L)``, bool or 0/1) is set.

    A row with nothing kept gives zeros (its count is clamped to 1; counts are integers, so the clamp
    changes nothing else).
    """
    weights = keep.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TextTransformer(nn.Module):
    """Token + learned position embeddings, a pre-norm ``nn.TransformerEncoder``, pooling, projection.

    Args:
        vocab_size, context_length: from the tokenizer.
        output_dim: embedding size after the final linear projection.
        width, layers, heads: transformer size (``width`` divisible by ``heads``).
        causal: CLIP-style causal attention (each token sees only earlier ones).
        pool: ``"eos"`` takes the ``<eos>`` token's state (CLIP; with ``causal`` it has read the whole
            caption), ``"mean"`` averages the non-padding tokens.
        pad_id, eos_id: ids of ``<pad>`` (masked out of attention) and ``<eos>``.
    """

    def __init__(self, vocab_size: int, context_length: int, output_dim: int = 128, width: int = 128,
                 layers: int = 2, heads: int = 4, causal: bool = True, pool: Literal["eos", "mean"] = "eos",
                 pad_id: int = WordTokenizer.pad_id, eos_id: int = WordTokenizer.eos_id,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in ("eos", "mean"):
            raise ValueError(f"pool must be 'eos' or 'mean', got {pool!r}")
        self.context_length, self.causal, self.pool = context_length, causal, pool
        self.pad_id, self.eos_id = pad_id, eos_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.empty(context_length, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, output_dim, bias=False)
        self.output_dim = output_dim
        # Built once, sliced per batch; not persistent, so state_dict keys are unchanged.
        self.register_buffer("causal_mask", torch.ones(context_length, context_length, dtype=torch.bool).triu(1),
                             persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # CLIP's initialisation: small embeddings so early attention is close to uniform.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        nn.init.normal_(self.projection.weight, std=self.projection.in_features ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids (``L <= context_length``) -> ``(B, output_dim)`` embeddings."""
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"got {length} tokens per text, context_length is {self.context_length}")
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        padding = tokens == self.pad_id
        causal_mask = self.causal_mask[:length, :length] if self.causal else None
        x = self.final_norm(self.transformer(x, mask=causal_mask, src_key_padding_mask=padding))
        return self.projection(self._pool(x, tokens, padding))

    def _pool(self, x: torch.Tensor, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        if self.pool == "mean":
            return masked_mean(x, ~padding)
        # First <eos> per row; a row without one (hand-built tokens) falls back to its last token.
        is_eos = tokens == self.eos_id
        index = torch.where(is_eos.any(1), is_eos.int().argmax(1), tokens.new_full((len(tokens),), -1))
        return x[torch.arange(len(x), device=x.device), index]

    def layer_groups(self) -> list[nn.Module]:
        """Input-to-output groups for partial freezing: embeddings, each layer, final norm + projection."""
        embeddings = nn.ModuleList([self.token_embedding])
        embeddings.register_parameter("position_embedding", self.position_embedding)
        return [embeddings, *self.transformer.layers, nn.ModuleList([self.final_norm, self.projection])]
