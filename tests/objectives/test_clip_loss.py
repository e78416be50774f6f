"""CLIPLoss: hand-computed values, MCL masking, gradients, logit-scale clamping."""

from __future__ import annotations

import math

import pytest
import torch

from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_, new_logit_scale


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
    # exp(10) >> 100: the loss is the one at multiplier 100 (positive logit 100, the negative 0).
    clamped = CLIPLoss()(eye, eye, torch.tensor(10.0))
    assert clamped.item() == pytest.approx(math.log(math.exp(100.0) + 1) - 100.0, abs=1e-12)
    assert clamped.item() == CLIPLoss()(eye, eye, torch.tensor(math.log(100.0))).item()
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


def test_float64_embeddings_stay_float64() -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    text = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    loss = CLIPLoss()(image, text, torch.tensor(math.log(2.5), dtype=torch.float64))
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(_reference(image, text, 2.5, None), abs=1e-12)


# ------------------------------------------------------------------------------------------ duplicate captions

def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def test_duplicate_captions_are_not_negatives_hand_computed() -> None:
    # Unit 2-d embeddings, multiplier 2: image i . text j is a plain dot product times 2.
    c, s = math.cos(0.3), math.sin(0.3)
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [c, s], [s, c]], dtype=torch.float64)
    text = torch.tensor([[c, s], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    scale = 2.0
    # Samples 0 and 1 share a caption ("a dog"): neither is the other's negative, in either direction.
    caption_ids = torch.tensor([7, 7, 3, 5])
    sim = (scale * image @ text.T).tolist()  # sim[i][j]: image i vs text j
    allowed = {0: [2, 3], 1: [2, 3], 2: [0, 1, 3], 3: [0, 1, 2]}  # candidates other than the positive

    def direction(s_: list[list[float]]) -> float:
        return sum(_logsumexp([s_[i][i]] + [s_[i][j] for j in allowed[i]]) - s_[i][i] for i in range(4)) / 4

    transposed = [[sim[j][i] for j in range(4)] for i in range(4)]  # text i vs image j
    expected = 0.5 * (direction(sim) + direction(transposed))
    loss = CLIPLoss()(image, text, torch.tensor(math.log(scale), dtype=torch.float64), caption_ids=caption_ids)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # Distinct ids are plain CLIP; the duplicate mask changes the value.
    distinct = CLIPLoss()(image, text, torch.tensor(math.log(scale), dtype=torch.float64),
                          caption_ids=torch.arange(4))
    plain = CLIPLoss()(image, text, torch.tensor(math.log(scale), dtype=torch.float64))
    assert distinct.item() == pytest.approx(plain.item(), abs=1e-12)
    assert abs(loss.item() - plain.item()) > 1e-3


def test_duplicate_captions_combine_with_pseudo_labels_and_skip_empty_anchors() -> None:
    generator = torch.Generator().manual_seed(5)
    image = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    text = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    # Groups {0, 1, 2}, {3}; captions 0 and 1 equal. Anchor 3 is alone in its group and drops out;
    # anchors 0 and 1 only keep candidate 2, anchor 2 keeps 0 and 1.
    labels, caption_ids = torch.tensor([0, 0, 0, 1]), torch.tensor([4, 4, 8, 9])
    loss = CLIPLoss()(image, text, torch.tensor(0.0, dtype=torch.float64), labels, caption_ids)
    img = (image / image.norm(dim=1, keepdim=True)).tolist()
    txt = (text / text.norm(dim=1, keepdim=True)).tolist()
    allowed = {0: [2], 1: [2], 2: [0, 1]}

    def direction(a: list[list[float]], b: list[list[float]]) -> float:
        sims = [[sum(x * y for x, y in zip(a[i], b[j], strict=True)) for j in range(4)] for i in range(4)]
        return sum(_logsumexp([sims[i][i]] + [sims[i][j] for j in allowed[i]]) - sims[i][i] for i in allowed) / 3

    assert loss.item() == pytest.approx(0.5 * (direction(img, txt) + direction(txt, img)), abs=1e-12)
    loss.backward()
    assert torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()
    # Every caption identical: no anchor keeps a candidate; zero loss, finite gradients, never NaN.
    image.grad = None
    same = CLIPLoss()(image, text, torch.tensor(0.0, dtype=torch.float64), caption_ids=torch.zeros(4, dtype=torch.long))
    same.backward()
    assert same.item() == 0.0 and torch.isfinite(image.grad).all()


def test_caption_ids_of_wrong_shape_are_rejected() -> None:
    with pytest.raises(ValueError, match="caption_ids"):
        CLIPLoss()(torch.randn(3, 2), torch.randn(3, 2), torch.tensor(0.0), caption_ids=torch.arange(4))


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


# Duplicate captions within rank 0 (samples 0, 2) and across ranks (samples 1, 4 and 3, 6).
CAPTIONS = torch.tensor([0, 1, 0, 3, 1, 5, 3, 7])


def _both_losses(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, labels: torch.Tensor,
                 captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pseudo-label loss without and with caption ids (their sum is what gets backpropagated)."""
    return (CLIPLoss()(image_emb, text_emb, logit_scale, labels),
            CLIPLoss()(image_emb, text_emb, logit_scale, labels, captions))


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
    losses = _both_losses(image_emb, text_emb, model.module.logit_scale, labels[local], CAPTIONS[local])
    sum(losses).backward()
    total = torch.stack(losses).detach()
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
    expected = torch.stack(_both_losses(image_emb, text_emb, model.logit_scale, labels, CAPTIONS))
    expected.sum().backward()
    assert abs(expected[0] - expected[1]) > 1e-4  # the caption ids did change the loss
    for rank in range(WORLD):
        result = np.load(tmp_path / f"rank{rank}.npz")
        assert np.allclose(result["loss"], expected.detach().numpy(), atol=1e-5)
        for index, param in enumerate(model.parameters()):
            assert np.allclose(result[f"grad{index}"], param.grad.numpy(), atol=1e-5)
