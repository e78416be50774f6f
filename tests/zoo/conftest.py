"""Skip tests/zoo cleanly where the peer libraries are not installed (the default `make test` venv).

The zoo venv (`make install-zoo`) has lightly, open_clip and timm; elsewhere the modules here are not
collected at all, so `make test` neither imports a missing package nor pays for importing a present one.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ZOO_MODULES = ("lightly", "open_clip", "timm")
MISSING = [name for name in ZOO_MODULES if importlib.util.find_spec(name) is None]

# find_spec only looks the package up (no import), so this costs nothing in the default venv.
collect_ignore_glob = ["test_*.py"] if MISSING else []


@pytest.fixture
def tiny_hf_clip_dir(tmp_path: Path) -> Path:
    """A tiny random CLIPModel + CLIP tokenizer saved with save_pretrained (letters-only BPE vocabulary)."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path / "hf-clip"
    root.mkdir()
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(letters)})
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 24, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)) \
        .save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
