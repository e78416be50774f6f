"""Third-party models through mcl's registries: timm and torchvision backbones, open_clip and HF CLIP towers.

Run in the zoo environment (``.venv-zoo``: timm, torchvision, open-clip-torch, transformers); every model
is tiny and randomly initialised, nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mcl.errors import ConfigError
from mcl.models import ContrastiveEncoder, build_backbone, build_encoder, check_backbone
from mcl.objectives.clip import CLIPLoss

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

CAPTIONS = ["a red striped triangle", "a blue dotted square", "a green plain circle", "a red square"]
TIMM_VIT = "timm:vit_tiny_patch16_224"
TINY_VIT = {"img_size": 32, "patch_size": 4, "depth": 2}


def _train_step(encoder: ContrastiveEncoder, size: int = 32) -> None:
    out = encoder(torch.rand(4, 3, size, size))
    assert out.shape == (4, 8)
    out.square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------- timm


def test_timm_vit_backbone_forward_backward() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(TIMM_VIT, None, 8, 16, **TINY_VIT)
    assert encoder.feature_dim == 192  # num_features, head removed (num_classes=0)
    assert encoder.preprocess.mean == (0.5, 0.5, 0.5) and encoder.preprocess.input_size == 32
    _train_step(encoder)
    encoder.zero_grad()
    _train_step(encoder, size=48)  # resized to the 32 px the ViT was built for


def test_timm_local_weights_and_no_downloads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_VIT).eval()
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))  # with its classifier head
    model = build_backbone(TIMM_VIT, pretrained=tmp_path / "vit.safetensors", **TINY_VIT).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), source.forward_head(source.forward_features(images), pre_logits=True))
    with pytest.raises(ConfigError, match="pretrained=True would download"):
        build_backbone(TIMM_VIT, pretrained=True)
    with pytest.raises(ConfigError, match=r"timm has no model 'vit_tiny_patch16_22' \(did you mean"):
        check_backbone("timm:vit_tiny_patch16_22")


def test_timm_model_object_in_contrastive_encoder() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    encoder = ContrastiveEncoder(model, projection_dim=8, hidden_dim=16)
    assert encoder.feature_dim == 512 and model.num_classes == 0  # classifier reset
    _train_step(encoder)


# ---------------------------------------------------------------------------------------------- torchvision


def test_torchvision_resnet18_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("torchvision:resnet18", None, 8, 16)
    assert encoder.feature_dim == 512 and isinstance(encoder.backbone.fc, torch.nn.Identity)
    assert encoder.preprocess.input_size is None and encoder.preprocess.std == (0.229, 0.224, 0.225)
    _train_step(encoder)
    # A local torchvision checkpoint (head included) loads before the head is stripped.
    source = torchvision.models.resnet18().eval()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    loaded = build_backbone("torchvision:resnet18", pretrained=str(tmp_path / "resnet18.pth")).eval()
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        check_backbone("torchvision:resnet81")


def test_torchvision_model_object_in_contrastive_encoder() -> None:
    encoder = ContrastiveEncoder(torchvision.models.squeezenet1_1(), feature_dim=1000, projection_dim=8,
                                 hidden_dim=16)
    assert encoder.feature_dim == 1000  # an explicit feature_dim leaves the model as it is
    encoder = build_encoder("torchvision:mobilenet_v3_small", None, 8, 16, width_mult=0.25)  # kwargs pass through
    assert encoder.feature_dim == 144  # the classifier Sequential's first Linear, now Identity
    _train_step(encoder)


# ---------------------------------------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def open_clip():  # noqa: ANN201 - the module, with two tiny configs registered
    open_clip = pytest.importorskip("open_clip")
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
    configs = {
        "mcl-tiny-vit": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32,
                                                         "head_width": 16, "patch_size": 8}, "text_cfg": text},
        "mcl-tiny-rn": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
                        "text_cfg": text},
    }
    open_clip.factory._MODEL_CONFIGS.update(configs)
    yield open_clip
    for name in configs:
        open_clip.factory._MODEL_CONFIGS.pop(name, None)


def test_open_clip_tiny_vit_partial_lock_and_step(open_clip) -> None:  # noqa: ANN001
    from mcl.models.two_tower import OpenCLIPAdapter, build_two_tower

    torch.manual_seed(0)
    adapter = build_two_tower("open_clip:mcl-tiny-vit", pretrained=None)
    assert isinstance(adapter, OpenCLIPAdapter) and adapter.embed_dim == 16
    adapter.lock_image(unlocked_groups=1)
    trainable = {name for name, p in adapter.named_parameters() if p.requires_grad}
    assert not any(name.startswith("model.visual.conv1") for name in trainable)
    assert any(name.startswith("model.visual.") for name in trainable)  # the last group stays trainable
    tokens = adapter.tokenize(CAPTIONS)
    assert tokens.shape == (4, 16)
    loss = CLIPLoss()(adapter.encode_image(torch.rand(4, 3, 40, 40)), adapter.encode_text(tokens),
                      adapter.logit_scale)
    loss.backward()
    assert torch.isfinite(loss) and adapter.logit_scale.grad is not None
    assert adapter.model.visual.conv1.weight.grad is None


def test_open_clip_locked_layers_stay_in_eval_mode(open_clip) -> None:  # noqa: ANN001
    """open_clip's locking only stops gradients; mcl keeps the locked layers fixed functions (no dropout)."""
    from mcl.models.two_tower import build_two_tower

    adapter = build_two_tower("open_clip:mcl-tiny-vit", pretrained=None)
    adapter.lock_image(unlocked_groups=2)  # open_clip's last groups: visual.proj, then [resblocks[-1], ln_post]
    adapter.lock_text()
    adapter.train()
    blocks = adapter.model.visual.transformer.resblocks
    assert not blocks[0].training and blocks[1].training and adapter.model.visual.ln_post.training
    assert not adapter.model.transformer.training and not adapter.model.visual.conv1.training
    assert all(not m.training for m in blocks[0].modules())  # dropout inside a locked block included
    adapter.eval()
    adapter.train()
    assert not blocks[0].training and blocks[1].training


def test_open_clip_resnet_partial_lock_names_the_config_key(open_clip) -> None:  # noqa: ANN001
    from mcl.models.two_tower import build_two_tower

    adapter = build_two_tower("open_clip", name="mcl-tiny-rn", pretrained=None)
    adapter.lock_image(0)  # locking the whole tower works
    with pytest.raises(ConfigError, match=r"multimodal.unlocked_image_groups: 0") as info:
        adapter.lock_image(unlocked_groups=1)
    assert "ModifiedResNet" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- HF CLIP


def test_hf_clip_tiny_from_directory(tiny_hf_clip_dir: Path) -> None:
    from mcl.models.two_tower import HFCLIPAdapter, build_two_tower

    adapter = build_two_tower(f"hf:{tiny_hf_clip_dir}", local_files_only=True)
    assert isinstance(adapter, HFCLIPAdapter) and adapter.embed_dim == 8
    adapter.lock_image(unlocked_groups=1)
    tokens = adapter.tokenize(CAPTIONS)
    loss = CLIPLoss()(adapter.encode_image(torch.rand(4, 3, 24, 24)), adapter.encode_text(tokens),
                      adapter.logit_scale)
    loss.backward()
    assert adapter.model.visual_projection.weight.grad is not None
    assert adapter.model.vision_model.embeddings.patch_embedding.weight.grad is None
