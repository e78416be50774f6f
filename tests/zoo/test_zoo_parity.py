"""Our objectives against the peer libraries' own implementations, values and gradients in float64.

- :class:`mcl.objectives.NTXentLoss` / :class:`~mcl.objectives.DCLLoss` vs ``lightly.loss.NTXentLoss`` /
  ``lightly.loss.DCLLoss`` (two views ``(B, D)`` each; both libraries L2-normalise internally).
- :class:`mcl.objectives.clip.CLIPLoss` vs ``open_clip.loss.ClipLoss`` at the same logit scale
  (open_clip expects normalised features and the multiplier ``exp(t)``; we take raw features and ``t``).

Without pseudo-labels MCL's losses are the plain ones, so they must agree to float64 round-off (1e-12).
Runs only in the zoo venv (`make test-zoo`); tests/zoo/conftest.py skips it elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch

lightly_loss = pytest.importorskip("lightly.loss")
open_clip_loss = pytest.importorskip("open_clip.loss")

from mcl.objectives import DCLLoss, NTXentLoss  # noqa: E402
from mcl.objectives.clip import CLIPLoss  # noqa: E402

ATOL = 1e-12
Result = tuple[torch.Tensor, list[torch.Tensor]]


def _views(batch: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    z_b = z_a + 0.5 * torch.randn(batch, dim, generator=generator, dtype=torch.float64)  # correlated views
    return z_a, z_b


def _value_and_grads(loss_fn, *inputs: torch.Tensor) -> Result:  # noqa: ANN001
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), list(grads)


def _assert_same(ours: Result, theirs: Result) -> None:
    assert ours[0].dtype == torch.float64
    assert torch.allclose(ours[0], theirs[0], rtol=0, atol=ATOL), (ours[0].item(), theirs[0].item())
    for mine, peer in zip(ours[1], theirs[1], strict=True):
        assert torch.allclose(mine, peer, rtol=0, atol=ATOL), (mine - peer).abs().max().item()


@pytest.mark.parametrize("batch", [2, 7, 32])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 0.5, 1.0])
def test_ntxent_matches_lightly(batch: int, temperature: float) -> None:
    z_a, z_b = _views(batch, 16, seed=batch)
    ours = _value_and_grads(NTXentLoss(temperature), z_a, z_b)
    theirs = _value_and_grads(lightly_loss.NTXentLoss(temperature=temperature), z_a, z_b)
    _assert_same(ours, theirs)


@pytest.mark.parametrize("batch", [2, 7, 32])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_dcl_matches_lightly(batch: int, temperature: float) -> None:
    z_a, z_b = _views(batch, 16, seed=100 + batch)
    ours = _value_and_grads(DCLLoss(temperature), z_a, z_b)
    theirs = _value_and_grads(lightly_loss.DCLLoss(temperature=temperature), z_a, z_b)
    _assert_same(ours, theirs)


@pytest.mark.parametrize("batch", [2, 9, 32])
@pytest.mark.parametrize("multiplier", [1.0, 1 / 0.07, 50.0])
def test_clip_loss_matches_open_clip(batch: int, multiplier: float) -> None:
    generator = torch.Generator().manual_seed(batch)
    image = torch.randn(batch, 12, generator=generator, dtype=torch.float64)
    text = image + torch.randn(batch, 12, generator=generator, dtype=torch.float64)
    log_scale = torch.tensor(math.log(multiplier), dtype=torch.float64)

    def ours_fn(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        return CLIPLoss()(image, text, log_scale)

    peer = open_clip_loss.ClipLoss()

    def theirs_fn(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        # open_clip's model normalises its features and exponentiates logit_scale before the loss.
        normalize = torch.nn.functional.normalize
        return peer(normalize(image, dim=-1), normalize(text, dim=-1), log_scale.exp())

    _assert_same(_value_and_grads(ours_fn, image, text, log_scale), _value_and_grads(theirs_fn, image, text, log_scale))


def test_timm_backbone_builds_offline() -> None:
    # The zoo venv's timm makes a randomly initialised backbone without a download (the peer benchmark's path).
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
