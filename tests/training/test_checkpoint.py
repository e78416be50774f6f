"""Resume checkpoints: every rank's RNG stream saved and restored."""

from pathlib import Path

import torch
from torch import nn

from mcl.config import TrainConfig
from mcl.files import load_tensors, save_tensors
from mcl.training.checkpoint import TrainState, load_checkpoint, rank_rng_states, save_checkpoint
from mcl.training.schedule import build_optimizer


def _rank_rng_worker(rank: int, world: int, directory: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model.parameters(), TrainConfig())
    torch.manual_seed(100 + rank)  # each rank draws its own augmentations
    states = rank_rng_states()
    if rank == 0:
        save_checkpoint(Path(directory), model, optimizer, TrainState(1, 5, []), None, rng=states)
    expected = torch.rand(3)
    dist.barrier()
    torch.manual_seed(999)  # a new process
    load_checkpoint(Path(directory), model, optimizer, None)
    save_tensors(f"{directory}/rank{rank}.safetensors", {"expected": expected, "resumed": torch.rand(3)})
    dist.destroy_process_group()


def test_every_rank_resumes_its_own_rng_stream(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_rng_worker, args=(2, str(tmp_path)), nprocs=2)
    draws = [load_tensors(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    for draw in draws:
        assert torch.equal(draw["expected"], draw["resumed"])
    assert not torch.equal(draws[0]["expected"], draws[1]["expected"])
