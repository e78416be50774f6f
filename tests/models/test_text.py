"""WordTokenizer and TextTransformer."""

from __future__ import annotations

import json

import pytest
import torch

from mcl.errors import DataError
from mcl.models.text import TextTransformer, WordTokenizer, masked_mean, split_words

CORPUS = ["A red striped triangle.", "a blue dotted square", "a red square", "the cat's hat"]


def test_split_words_lowercases_and_keeps_punctuation() -> None:
    assert split_words("A Red, striped triangle!") == ["a", "red", ",", "striped", "triangle", "!"]
    assert split_words("the cat's hat") == ["the", "cat's", "hat"]


def test_fit_is_deterministic_and_frequency_ordered() -> None:
    tokenizer = WordTokenizer.fit(CORPUS, context_length=8)
    assert tokenizer.vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tokenizer.vocab[4:6] == ["a", "red"]  # most frequent first
    assert WordTokenizer.fit(list(reversed(CORPUS)), context_length=8).vocab == tokenizer.vocab
    assert WordTokenizer.fit(CORPUS, min_count=2).vocab[4:] == ["a", "red", "square"]


def test_encode_pad_truncate_and_unknown_words() -> None:
    tokenizer = WordTokenizer.fit(CORPUS, context_length=5)
    tokens = tokenizer(["a red zebra", "a red striped triangle a blue square"])
    assert tokens.shape == (2, 5) and tokens.dtype == torch.long
    red, a = tokenizer.index["red"], tokenizer.index["a"]
    assert tokens[0].tolist() == [tokenizer.bos_id, a, red, tokenizer.unk_id, tokenizer.eos_id]
    assert tokens[1, -1].item() == tokenizer.eos_id  # truncated, <eos> kept
    short = tokenizer(["red"])[0].tolist()
    assert short == [tokenizer.bos_id, red, tokenizer.eos_id, tokenizer.pad_id, tokenizer.pad_id]
    assert tokenizer.decode(tokens[0].tolist()) == "a red <unk>"


def test_json_round_trip() -> None:
    tokenizer = WordTokenizer.fit(CORPUS, context_length=7)
    clone = WordTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert clone.vocab == tokenizer.vocab and clone.context_length == 7
    assert torch.equal(clone(CORPUS), tokenizer(CORPUS))
    with pytest.raises(DataError, match="vocab must start with"):
        WordTokenizer.from_dict({"vocab": ["a"], "context_length": 4})
    with pytest.raises(DataError, match="corpus is empty"):
        WordTokenizer.fit(["", "   "])


@pytest.mark.parametrize(("causal", "pool"), [(True, "eos"), (False, "mean")])
def test_text_transformer_shapes_grad_and_padding_invariance(causal: bool, pool: str) -> None:
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(CORPUS, context_length=10)
    tower = TextTransformer(tokenizer.vocab_size, 10, output_dim=12, width=16, layers=2, heads=2,
                            causal=causal, pool=pool).eval()
    tokens = tokenizer(CORPUS)
    out = tower(tokens)
    assert out.shape == (4, 12)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in tower.parameters() if p.grad is not None)
    # Padding is masked: the same caption in a shorter context gives the same embedding.
    with torch.no_grad():
        assert torch.allclose(tower(tokens[:, :8])[2], tower(tokens)[2], atol=1e-5)


def test_eos_pooling_reads_the_whole_caption() -> None:
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(CORPUS, context_length=8)
    tower = TextTransformer(tokenizer.vocab_size, 8, output_dim=8, width=16, layers=1, heads=2).eval()
    with torch.no_grad():
        first, second = tower(tokenizer(["a red square", "a blue square"]))
    assert not torch.allclose(first, second)


def test_layer_groups_cover_all_parameters() -> None:
    tower = TextTransformer(20, 8, output_dim=8, width=16, layers=3, heads=2)
    groups = tower.layer_groups()
    assert len(groups) == 5
    grouped = {id(p) for g in groups for p in g.parameters()}
    assert grouped == {id(p) for p in tower.parameters()}
    with pytest.raises(ValueError, match="context_length"):
        tower(torch.zeros(1, 9, dtype=torch.long))


def test_causal_mask_is_a_non_persistent_bool_buffer() -> None:
    tower = TextTransformer(20, 8, output_dim=8, width=16, layers=1, heads=2)
    assert "causal_mask" not in tower.state_dict()
    tower.half()
    assert tower.causal_mask.dtype == torch.bool
    assert torch.equal(tower.causal_mask[:3, :3], torch.ones(3, 3, dtype=torch.bool).triu(1))


def test_masked_mean_ignores_dropped_positions_and_zeroes_empty_rows() -> None:
    x = torch.arange(12.0).view(2, 3, 2)
    keep = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert torch.equal(masked_mean(x, keep), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    assert torch.equal(masked_mean(x, keep.bool()), masked_mean(x, keep))
