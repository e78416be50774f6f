"""Two real gloo processes: the gathered loss and its gradients equal the 1-process loss on the whole batch."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcl.objectives import DCLLoss, NTXentLoss

WORLD = 2


def _data():
    generator = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    return x_a, x_b, labels


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(6, 4)


def _loss(kind):
    return NTXentLoss(0.5) if kind == "ntxent" else DCLLoss(0.5)


def _worker(rank, out_dir, kind, masked):
    # A file rendezvous avoids races for a free TCP port between parallel test runs.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    x_a, x_b, labels = _data()
    local = slice(rank * 4, rank * 4 + 4)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    loss = _loss(kind)(model(x_a[local]), model(x_b[local]), labels[local] if masked else None)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    np.save(f"{out_dir}/grad{rank}.npy", model.module.weight.grad.numpy())
    np.save(f"{out_dir}/loss{rank}.npy", (mean_loss / WORLD).numpy())
    dist.barrier()  # both ranks finish their writes before the group is torn down
    dist.destroy_process_group()
    # gloo's background threads can abort the interpreter's teardown ("terminate called without an
    # active exception"); the results are on disk, so leave without running C++ destructors.
    os._exit(0)


@pytest.mark.parametrize("kind,masked", [("ntxent", False), ("ntxent", True), ("dcl", True)])
def test_gathered_loss_and_gradients_match_single_process(tmp_path, kind, masked):
    mp.spawn(_worker, args=(str(tmp_path), kind, masked), nprocs=WORLD, join=True)
    x_a, x_b, labels = _data()
    model = _model()
    expected = _loss(kind)(model(x_a), model(x_b), labels if masked else None)
    expected.backward()
    for rank in range(WORLD):
        assert np.allclose(np.load(tmp_path / f"loss{rank}.npy"), expected.item(), atol=1e-5)
        assert np.allclose(np.load(tmp_path / f"grad{rank}.npy"), model.weight.grad.numpy(), atol=1e-5)
