import math

import torch
import torch.nn.functional as F

from mcl.objectives import DCLLoss, NTXentLoss, info_nce

Z_A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
Z_B = torch.tensor([[1.0, 0.2], [0.1, 1.0], [1.0, 0.8], [0.9, -1.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def _hand_loss(temperature, labels=None, decoupled=False):
    """Loop-by-loop reference: every anchor, its positive, its allowed negatives."""
    z = F.normalize(torch.cat([Z_A, Z_B]), dim=1).tolist()
    n = len(Z_A)
    groups = (labels.tolist() * 2) if labels is not None else [0] * (2 * n)
    losses = []
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        sim = [sum(a * b for a, b in zip(z[i], z[k], strict=True)) / temperature for k in range(2 * n)]
        negatives = [k for k in range(2 * n) if k not in (i, p) and groups[k] == groups[i]]
        if not negatives:
            continue
        terms = [math.exp(sim[k]) for k in negatives] + ([] if decoupled else [math.exp(sim[p])])
        losses.append(-sim[p] + math.log(sum(terms)))
    return sum(losses) / len(losses)


def test_ntxent_matches_hand_computation():
    assert torch.isclose(NTXentLoss(0.5)(Z_A, Z_B), torch.tensor(_hand_loss(0.5)), atol=1e-5)


def test_ntxent_with_pseudo_label_mask():
    value = NTXentLoss(0.5)(Z_A, Z_B, LABELS)
    assert torch.isclose(value, torch.tensor(_hand_loss(0.5, LABELS)), atol=1e-5)
    assert not torch.isclose(value, NTXentLoss(0.5)(Z_A, Z_B))


def test_dcl_matches_hand_computation_with_and_without_mask():
    assert torch.isclose(DCLLoss(0.3)(Z_A, Z_B), torch.tensor(_hand_loss(0.3, decoupled=True)), atol=1e-5)
    assert torch.isclose(DCLLoss(0.3)(Z_A, Z_B, LABELS), torch.tensor(_hand_loss(0.3, LABELS, True)), atol=1e-5)


def test_anchor_without_negatives_gives_no_nan():
    alone = torch.tensor([0, 1, 2, 3])  # every sample in its own group: no negatives at all
    for loss_fn in (NTXentLoss(0.5), DCLLoss(0.5)):
        z_a = Z_A.clone().requires_grad_(True)
        loss = loss_fn(z_a, Z_B, alone)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() == 0.0
        assert torch.isfinite(z_a.grad).all()
    partly = torch.tensor([0, 0, 1, 2])  # samples 2 and 3 have only their own other view
    z_a = Z_A.clone().requires_grad_(True)
    loss = DCLLoss(0.5)(z_a, Z_B, partly)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_a.grad).all()


def test_info_nce_is_stable_for_large_logits():
    logits = torch.tensor([[1000.0, 999.0, -1000.0]])
    mask = torch.tensor([[False, True, True]])
    value = info_nce(logits, torch.tensor([0]), mask)
    assert torch.isfinite(value)
    assert torch.isclose(value, torch.log1p(torch.exp(torch.tensor(-1.0))), atol=1e-3)


def test_loss_is_finite_under_bf16_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = NTXentLoss(0.1)(Z_A * 1e-6, Z_B * 1e-6, LABELS)
    assert torch.isfinite(value)


def test_numpy_pseudo_labels_equal_tensor_ones() -> None:
    """combine_cluster_labels returns numpy: the loss takes it as it is."""
    import numpy as np

    from mcl.objectives import NTXentLoss

    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    labels = np.array([0, 0, 1, 1, 2, 2])
    loss = NTXentLoss(temperature=0.5)
    assert torch.equal(loss(z_a, z_b, labels), loss(z_a, z_b, torch.as_tensor(labels)))
