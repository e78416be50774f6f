"""CLIPLoss: hand-computed values, MCL masking, gradients, logit-scale clamping."""

from __future__ import annotations

import math

import pytest
import torch

from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_, new_logit_scale, scaled_logits


def _reference(image: torch.Tensor, text: torch.Tensor, scale: float, labels: list[int] | None) -> float:
    """The CLIP/MCL formula written out with Python loops, one direction at a time."""
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    n = len(image)
    labels = labels if labels is not None else [0] * n

    def direction(anchors: torch.Tensor, candidates: torch.Tensor) -> float:
        losses = []
        for i in range(n):
            negatives = [j for j in range(n) if j != i and labels[j] == labels[i]]
            if not negatives:
                continue
            sims = [scale * float(anchors[i] @ candidates[j]) for j in range(n)]
            denominator = math.exp(sims[i]) + sum(math.exp(sims[j]) for j in negatives)
            losses.append(-sims[i] + math.log(denominator))
        return sum(losses) / len(losses)

    return 0.5 * (direction(image, text) + direction(text, image))


def test_one_hot_pairs_closed_form() -> None:
    # Matching one-hot pairs: positive similarity 1, every negative 0.
    eye = torch.eye(4)
    scale = 5.0
    log_scale = torch.tensor(math.log(scale))
    plain = CLIPLoss()(eye, eye, log_scale)
    assert plain.item() == pytest.approx(math.log(math.exp(scale) + 3) - scale, abs=1e-6)
    grouped = CLIPLoss()(eye, eye, log_scale, torch.tensor([0, 0, 1, 1]))
    assert grouped.item() == pytest.approx(math.log(math.exp(scale) + 1) - scale, abs=1e-6)


@pytest.mark.parametrize("labels", [None, [0, 0, 1, 1], [0, 1, 1, 1]])
def test_matches_loop_reference(labels: list[int] | None) -> None:
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    log_scale = torch.tensor(math.log(2.5))
    pseudo = torch.tensor(labels) if labels is not None else None
    loss = CLIPLoss()(image, text, log_scale, pseudo)
    assert loss.item() == pytest.approx(_reference(image, text, 2.5, labels), abs=1e-6)


def test_gradients_finite_and_reach_logit_scale() -> None:
    image = torch.randn(6, 8, requires_grad=True)
    text = torch.randn(6, 8, requires_grad=True)
    log_scale = new_logit_scale()
    CLIPLoss()(image, text, log_scale, torch.tensor([0, 0, 1, 1, 2, 2])).backward()
    for grad in (image.grad, text.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert log_scale.grad.abs().item() > 0


def test_anchor_without_negatives_is_skipped_not_nan() -> None:
    image = torch.randn(3, 4, requires_grad=True)
    text = torch.randn(3, 4, requires_grad=True)
    log_scale = torch.tensor(math.log(10.0))
    # Sample 2 is alone in its group: no negatives, left out of the mean.
    loss = CLIPLoss()(image, text, log_scale, torch.tensor([0, 0, 1]))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(_reference(image.detach(), text.detach(), 10.0, [0, 0, 1]), abs=1e-6)
    # Every sample alone: zero loss that still backpropagates.
    alone = CLIPLoss()(image, text, log_scale, torch.tensor([0, 1, 2]))
    alone.backward()
    assert alone.item() == 0.0 and torch.isfinite(image.grad).all()


def test_scale_is_clamped_at_100() -> None:
    eye = torch.eye(2)
    logits = scaled_logits(eye, eye, torch.tensor(10.0))  # exp(10) >> 100
    assert logits.max().item() == pytest.approx(100.0)
    param = new_logit_scale()
    assert param.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        param.fill_(9.0)
    clamp_logit_scale_(param)
    assert param.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        param.fill_(-1.0)
    clamp_logit_scale_(param)
    assert param.item() == 0.0


def test_half_precision_embeddings_are_normalised_in_float32() -> None:
    image = torch.randn(4, 8).half()
    loss = CLIPLoss()(image, image.clone(), torch.tensor(math.log(20.0)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------- distributed

WORLD = 2


class _Towers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.image, self.text = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(3.0)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(x), self.text(t)


def _pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    return torch.randn(8, 6, generator=generator), torch.randn(8, 5, generator=generator), labels


def _worker(rank: int, out_dir: str) -> None:
    import os

    import numpy as np
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    images, texts, labels = _pairs()
    local = slice(rank * 4, rank * 4 + 4)
    model = torch.nn.parallel.DistributedDataParallel(_Towers())
    image_emb, text_emb = model(images[local], texts[local])
    loss = CLIPLoss()(image_emb, text_emb, model.module.logit_scale, labels[local])
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    grads = {f"grad{i}": p.grad.numpy() for i, p in enumerate(model.module.parameters())}
    np.savez(f"{out_dir}/rank{rank}.npz", loss=(total / WORLD).numpy(), **grads)
    try:
        dist.barrier()
        dist.destroy_process_group()
    finally:
        # The results are on disk: a peer that left first or gloo's threads aborting the interpreter's
        # teardown must not turn into a failure, so leave without running C++ destructors.
        os._exit(0)


def test_distributed_loss_and_gradients_match_single_process(tmp_path) -> None:  # noqa: ANN001
    import numpy as np
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    images, texts, labels = _pairs()
    model = _Towers()
    image_emb, text_emb = model(images, texts)
    expected = CLIPLoss()(image_emb, text_emb, model.logit_scale, labels)
    expected.backward()
    for rank in range(WORLD):
        result = np.load(tmp_path / f"rank{rank}.npz")
        assert np.allclose(result["loss"], expected.item(), atol=1e-5)
        for index, param in enumerate(model.parameters()):
            assert np.allclose(result[f"grad{index}"], param.grad.numpy(), atol=1e-5)
