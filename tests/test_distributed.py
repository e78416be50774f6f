"""Two real gloo processes: the gathered loss and its gradients equal the 1-process loss on the whole batch."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcl import distributed
from mcl.objectives import DCLLoss, MoCoLoss, NTXentLoss

WORLD = 2


def _data():
    generator = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    return x_a, x_b, labels


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(6, 4)


def _moco_loss(model, x_a, x_b, labels, indices, local):
    """MoCo against a queue that the same global batches filled on every rank."""
    loss_fn = MoCoLoss(0.5, queue_size=6)
    generator = torch.Generator().manual_seed(2)
    earlier_keys, earlier_labels = torch.randn(8, 4, generator=generator), torch.tensor([0, 1] * 4)
    loss_fn.enqueue(earlier_keys[local], earlier_labels[local], indices[local] + 100)  # gathered: all 8
    keys = _model()(x_b[local]).detach() * 0.5
    loss = loss_fn(model(x_a[local]), keys, labels[local] if labels is not None else None, indices[local])
    loss_fn.enqueue(keys, labels[local] if labels is not None else None, indices[local])
    return loss, loss_fn


def _loss(kind, model, x_a, x_b, labels, local):
    if kind == "moco":
        return _moco_loss(model, x_a, x_b, labels, torch.arange(8), local)
    loss_fn = NTXentLoss(0.5) if kind == "ntxent" else DCLLoss(0.5)
    return loss_fn(model(x_a[local]), model(x_b[local]), labels[local] if labels is not None else None), loss_fn


def _init(rank, out_dir):
    # A file rendezvous avoids races for a free TCP port between parallel test runs.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)


def _finish():
    dist.barrier()  # both ranks finish their writes before the group is torn down
    dist.destroy_process_group()
    # gloo's background threads can abort the interpreter's teardown ("terminate called without an
    # active exception"); the results are on disk, so leave without running C++ destructors.
    os._exit(0)


def _worker(rank, out_dir, kind, masked):
    _init(rank, out_dir)
    x_a, x_b, labels = _data()
    local = slice(rank * 4, rank * 4 + 4)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    loss, loss_fn = _loss(kind, model, x_a, x_b, labels if masked else None, local)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    np.save(f"{out_dir}/grad{rank}.npy", model.module.weight.grad.numpy())
    np.save(f"{out_dir}/loss{rank}.npy", (mean_loss / WORLD).numpy())
    if kind == "moco":
        np.save(f"{out_dir}/queue{rank}.npy", loss_fn.queue.numpy())
        np.save(f"{out_dir}/queue_labels{rank}.npy", loss_fn.queue_labels.numpy())
    _finish()


@pytest.mark.parametrize("kind,masked", [("ntxent", False), ("ntxent", True), ("dcl", True), ("moco", False),
                                         ("moco", True)])
def test_gathered_loss_and_gradients_match_single_process(tmp_path, kind, masked):
    mp.spawn(_worker, args=(str(tmp_path), kind, masked), nprocs=WORLD, join=True)
    x_a, x_b, labels = _data()
    model = _model()
    expected, loss_fn = _loss(kind, model, x_a, x_b, labels if masked else None, slice(0, 8))
    expected.backward()
    for rank in range(WORLD):
        assert np.allclose(np.load(tmp_path / f"loss{rank}.npy"), expected.item(), atol=1e-5)
        assert np.allclose(np.load(tmp_path / f"grad{rank}.npy"), model.weight.grad.numpy(), atol=1e-5)
        if kind == "moco":  # keys were gathered before enqueueing: every rank holds the global queue
            assert np.allclose(np.load(tmp_path / f"queue{rank}.npy"), loss_fn.queue.numpy(), atol=1e-6)
            assert np.array_equal(np.load(tmp_path / f"queue_labels{rank}.npy"), loss_fn.queue_labels.numpy())


ROWS = [5, 3]  # uneven per-rank batches, as ClusterBatchSampler's per-rank slices can be


def _uneven_worker(rank, out_dir):
    _init(rank, out_dir)
    start = sum(ROWS[:rank])
    x = torch.arange(start * 2, (start + ROWS[rank]) * 2, dtype=torch.float32).reshape(-1, 2).requires_grad_(True)
    gathered = distributed.gather_with_grad(x)
    weight = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    (gathered * weight).sum().backward()
    labels = distributed.gather_no_grad(torch.arange(start, start + ROWS[rank]) % 3)
    np.save(f"{out_dir}/gathered{rank}.npy", gathered.detach().numpy())
    np.save(f"{out_dir}/grad{rank}.npy", x.grad.numpy())
    np.save(f"{out_dir}/labels{rank}.npy", labels.numpy())
    np.save(f"{out_dir}/offset{rank}.npy", np.array(distributed.local_offset(ROWS[rank], x.device)))
    # what the epoch log reports: loss sums and sample counts of every rank, not rank 0's alone
    np.save(f"{out_dir}/logged{rank}.npy", np.array(distributed.sum_over_ranks([1.5 * ROWS[rank], ROWS[rank]],
                                                                               x.device)))
    _finish()


def test_uneven_gathers_keep_order_and_sum_gradients_over_ranks(tmp_path):
    mp.spawn(_uneven_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    weight = np.arange(16, dtype=np.float32).reshape(8, 2)
    for rank in range(WORLD):
        start = sum(ROWS[:rank])
        assert np.array_equal(np.load(tmp_path / f"gathered{rank}.npy"), np.arange(16).reshape(8, 2))
        assert np.array_equal(np.load(tmp_path / f"labels{rank}.npy"), np.arange(8) % 3), "pseudo-labels (mask mode)"
        # every rank's loss uses every part: the gradient of a part is the sum over the ranks' losses
        assert np.array_equal(np.load(tmp_path / f"grad{rank}.npy"), WORLD * weight[start : start + ROWS[rank]])
        assert int(np.load(tmp_path / f"offset{rank}.npy")) == start
        assert np.array_equal(np.load(tmp_path / f"logged{rank}.npy"), [1.5 * sum(ROWS), sum(ROWS)])
