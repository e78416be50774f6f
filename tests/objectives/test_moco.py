import math

import pytest
import torch
import torch.nn.functional as F

from mcl.objectives import MoCoLoss, MomentumEncoder, build_objective
from mcl.objectives.moco import ema_update_

QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
KEYS = torch.tensor([[0.9, 0.1], [0.2, 1.0], [1.0, 0.7]])
LABELS = torch.tensor([0, 1, 0])
INDICES = torch.tensor([10, 11, 12])
# Queue contents: (key, pseudo-label, sample index)
QUEUED = [([1.0, -1.0], 0, 20), ([-1.0, 0.5], 1, 21), ([0.3, 0.3], 0, 12), ([0.0, -1.0], 1, 22)]


def _filled(temperature=0.5, queue_size=4):
    loss_fn = MoCoLoss(temperature, queue_size)
    loss_fn.enqueue(torch.tensor([q[0] for q in QUEUED]), torch.tensor([q[1] for q in QUEUED]),
                    torch.tensor([q[2] for q in QUEUED]))
    return loss_fn


def _hand_loss(temperature, queue, labels=None):
    """Loop-by-loop reference: positive = own key; negatives = other keys and queue entries allowed."""
    q = F.normalize(QUERIES, dim=1).tolist()
    k = F.normalize(KEYS, dim=1).tolist()
    groups = labels.tolist() if labels is not None else [0] * len(q)
    losses = []
    for i in range(len(q)):
        def sim(v, i=i):
            unit = F.normalize(torch.tensor(v), dim=0).tolist()
            return sum(a * b for a, b in zip(q[i], unit, strict=True)) / temperature

        negatives = [sim(k[j]) for j in range(len(k)) if j != i and groups[j] == groups[i]]
        negatives += [sim(key) for key, group, index in queue
                      if (labels is None or group == groups[i]) and index != int(INDICES[i])]
        if not negatives:
            continue
        positive = sim(k[i])
        losses.append(-positive + math.log(math.exp(positive) + sum(math.exp(s) for s in negatives)))
    return sum(losses) / len(losses)


def test_loss_without_queue_entries_uses_in_batch_keys_only():
    value = MoCoLoss(0.5, queue_size=8)(QUERIES, KEYS, None, INDICES)
    assert torch.isclose(value, torch.tensor(_hand_loss(0.5, [])), atol=1e-5)


def test_loss_with_queue_matches_hand_computation():
    value = _filled(0.5)(QUERIES, KEYS, None, INDICES)
    assert torch.isclose(value, torch.tensor(_hand_loss(0.5, QUEUED)), atol=1e-5)


def test_loss_with_queue_and_pseudo_labels_matches_hand_computation():
    value = _filled(0.3)(QUERIES, KEYS, LABELS, INDICES)
    assert torch.isclose(value, torch.tensor(_hand_loss(0.3, QUEUED, LABELS)), atol=1e-5)


def test_queue_entries_of_other_groups_are_excluded():
    loss_fn = _filled()
    before = loss_fn(QUERIES, KEYS, torch.tensor([0, 0, 0]), INDICES)
    loss_fn.queue[1] = torch.tensor([5.0, -3.0])  # a group-1 entry: no anchor of group 0 may see it
    loss_fn.queue[3] = torch.tensor([-2.0, 9.0])
    assert torch.equal(loss_fn(QUERIES, KEYS, torch.tensor([0, 0, 0]), INDICES), before)
    loss_fn.queue[0] = torch.tensor([-1.0, 0.0])  # a group-0 entry does count
    assert not torch.equal(loss_fn(QUERIES, KEYS, torch.tensor([0, 0, 0]), INDICES), before)


def test_older_key_of_the_same_sample_is_not_a_negative():
    loss_fn = _filled()
    query, key = QUERIES[2:], KEYS[2:]
    before = loss_fn(query, key, None, torch.tensor([12]))
    loss_fn.queue[2] = torch.tensor([-0.6, 0.8])  # queued with sample index 12: the anchor's own image
    assert torch.equal(loss_fn(query, key, None, torch.tensor([12])), before)
    assert not torch.isclose(loss_fn(query, key, None, torch.tensor([99])), before)  # another image: a negative


def test_ring_buffer_replaces_oldest_and_reset_empties():
    loss_fn = MoCoLoss(0.5, queue_size=3)
    loss_fn.enqueue(torch.eye(2)[[0, 1]], torch.tensor([4, 5]), torch.tensor([0, 1]))
    loss_fn.enqueue(torch.tensor([[3.0, 4.0], [0.0, -2.0]]), torch.tensor([6, 7]), torch.tensor([2, 3]))
    assert loss_fn.queue_labels.tolist() == [7, 5, 6]  # slot 0 (oldest) overwritten
    assert loss_fn.queue_indices.tolist() == [3, 1, 2]
    assert torch.allclose(loss_fn.queue[0], torch.tensor([0.0, -1.0]))  # stored L2-normalised
    loss_fn.reset()
    assert (loss_fn.queue_labels == -1).all() and loss_fn.pointer == 0
    assert torch.isclose(loss_fn(QUERIES, KEYS, None, INDICES), torch.tensor(_hand_loss(0.5, [])), atol=1e-5)


def test_gradient_reaches_queries_only():
    queries, keys = QUERIES.clone().requires_grad_(True), KEYS.clone().requires_grad_(True)
    _filled()(queries, keys, LABELS, INDICES).backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert keys.grad is None


def test_registered_and_validated():
    assert isinstance(build_objective("moco", temperature=0.2, queue_size=16), MoCoLoss)
    with pytest.raises(ValueError):
        MoCoLoss(queue_size=-1)
    with pytest.raises(ValueError):
        MomentumEncoder(1.0)


def test_ema_update_formula():
    torch.manual_seed(0)
    target, source = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * t + 0.1 * s for t, s in zip(target.parameters(), source.parameters(), strict=True)]
    ema_update_(target, source, 0.9)
    assert all(torch.allclose(t, e) for t, e in zip(target.parameters(), expected, strict=True))


def test_momentum_encoder_copies_then_follows_by_ema_and_restarts_on_a_new_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    keys = MomentumEncoder(0.5)
    assert keys.follow(model) is True
    assert keys.encoder is not model and torch.equal(keys.encoder.weight, model.weight)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)  # an optimiser step
    assert keys.follow(model) is False
    assert torch.allclose(keys.encoder.weight, start + 1.0)  # 0.5 * start + 0.5 * (start + 2)
    assert not keys.encoder.weight.requires_grad
    wrapped = torch.nn.Module()
    wrapped.module = model  # DDP-style wrapper: the same model underneath
    assert keys.follow(wrapped) is False
    assert keys.follow(torch.nn.Linear(3, 2)) is True  # next stage
