"""Process-group setup for ``torchrun``: one process per rank, DDP, rank 0 writes.

Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) everything is a plain single
process. Under ``torchrun --nproc_per_node N`` (and its multi-node flags) the process group
uses NCCL when the ranks run on CUDA and gloo on CPU; each rank trains on its slice of the
global batch, so N processes step exactly like one process with the same global batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# Pair generation can keep ranks apart for a long time before the next collective.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Distributed:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> Distributed:
    """Join the torchrun process group when launched by torchrun; pick the device.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun on CUDA
            each rank takes ``cuda:LOCAL_RANK``.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=torch.device(kind))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if kind.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(kind)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Distributed(rank=rank, world=world, device=target)


def teardown(where: Distributed) -> None:
    if where.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, where: Distributed) -> torch.nn.Module:
    """`module` itself in one process, DistributedDataParallel (weights synced from rank 0) in several."""
    if not where.enabled:
        return module
    return DistributedDataParallel(module, device_ids=[where.device.index] if where.device.type == "cuda" else None)


def shard(batch: tuple[torch.Tensor, ...], where: Distributed) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous slice of a global batch (every tensor's first axis).

    Raises:
        ValueError: the global batch does not split evenly over the ranks.
    """
    if not where.enabled:
        return batch
    size = batch[0].shape[0]
    if size % where.world:
        raise ValueError(f"batch size {size} must be a multiple of the number of processes {where.world}")
    part = size // where.world
    return tuple(x[where.rank * part:(where.rank + 1) * part] for x in batch)


def mean_over_ranks(value: float, where: Distributed) -> float:
    """The mean of a scalar over all ranks (the global-batch loss when every rank has an equal slice)."""
    if not where.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=where.device)
    dist.all_reduce(tensor)
    return tensor.item() / where.world


def from_main(value: float, where: Distributed) -> float:
    """Rank 0's value of a scalar on every rank (so all ranks agree on when to stop)."""
    if not where.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=where.device)
    dist.broadcast(tensor, src=0)
    return tensor.item()


def barrier(where: Distributed) -> None:
    if where.enabled:
        dist.barrier()
