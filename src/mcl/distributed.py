"""Process-group helpers. With no process group (one CPU, one GPU) every helper is the identity,
so the single-process path is the same code with world size 1.

Gathers that feed a loss use :func:`gather_with_grad`: unlike ``torch.distributed.all_gather`` it
carries gradients back to every rank's local slice (the backward sums each part's gradient over
ranks: ``reduce_scatter`` on NCCL, ``all_reduce`` on gloo). Each rank then computes the loss of its
*local* anchors against the *global* candidates; DDP averages the gradients, which gives exactly the
gradient of the global-batch loss when the ranks hold equally many anchors (tested in
``tests/test_distributed.py``).

:func:`init_process_group` joins torchrun's group so that ``--max-restarts`` restarts work (see there).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger("mcl")


def init_process_group(backend: str) -> None:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT``).

    torchrun's agent shares its TCPStore with the workers (``TORCHELASTIC_USE_AGENT_STORE``) and keeps it
    across ``--max-restarts`` restarts, so the failed attempt's process-group keys are still in it: a restarted
    rank can read a dead peer's address and fail ("Gloo connectFullMesh failed ... Connection refused";
    pytorch/pytorch#135712). Under one agent (single-node torchrun) every worker of an attempt sees the same
    ``TORCHELASTIC_RESTART_COUNT``, so the group's keys go under a prefix of it. Agents on several nodes
    count restarts each on their own, so there the store is used as it is:
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives every restart a fresh store instead.
    """
    env = os.environ
    shared = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not shared or int(env.get("GROUP_WORLD_SIZE", "1")) > 1:
        if shared and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and env.get("RANK") == "0":
            logger.warning("torchrun --max-restarts on several nodes: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                           "so that restarted workers do not read the failed attempt's addresses")
        dist.init_process_group(backend)
        return
    from torch.distributed.constants import default_pg_timeout

    size = int(env["WORLD_SIZE"])
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), size, is_master=False,
                          timeout=default_pg_timeout)
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"mcl/restart-{attempt}/default_pg", store),
                            rank=int(env["RANK"]), world_size=size)


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Only rank 0 writes files."""
    return rank() == 0


def _gather_sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor
    pad = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, pad])


class _AllGather(torch.autograd.Function):
    """All-gather of equal-shaped tensors whose backward sends every rank the summed gradient of its part."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor) -> torch.Tensor:
        # Rank r's loss depends on every part; the gradient of part r is the sum over all ranks.
        stacked = torch.stack(grads).contiguous()
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(stacked[0])
            dist.reduce_scatter_tensor(mine, stacked)
            return mine
        dist.all_reduce(stacked)  # gloo has no reduce_scatter
        return stacked[rank()]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (first dim may differ per rank) from all ranks, keeping the gradient."""
    if not is_distributed():
        return tensor
    sizes = _gather_sizes(tensor)
    parts = _AllGather.apply(_pad_rows(tensor, max(sizes)))
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks (labels, indices); no gradient."""
    if not is_distributed():
        return tensor
    sizes = _gather_sizes(tensor)
    padded = _pad_rows(tensor, max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def local_offset(local_rows: int, device: torch.device) -> int:
    """Index of this rank's first row in a gathered tensor."""
    if not is_distributed():
        return 0
    return sum(_gather_sizes(torch.empty(local_rows, device=device))[: rank()])


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (for logging; no gradient); unchanged in one process."""
    if not is_distributed():
        return values
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(totals)
    return totals.tolist()


def rank_seed(seed: int) -> int:
    """This rank's seed derived from ``seed``, distinct per rank (rank 0 keeps ``seed``)."""
    return seed + 1_000_003 * rank()


def barrier() -> None:
    """Synchronise ranks (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: object) -> object:
    """Send a picklable object from rank 0 to all ranks (internal data only, never user files)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
