"""Data-parallel training over the processes that ``torchrun`` or ``accelerate launch`` start.

Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
without them (``WORLD_SIZE`` unset or 1) everything here is a no-op and training runs as one
process. Every process reads the data and builds the same global batches (their order depends
only on seed and epoch); each takes every ``world_size``-th row of each, and the engine weights
the losses so that the averaged gradient is that of the whole global batch, as in one process.
Only rank 0 evaluates and writes files; the others wait for it at their next collective call.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

# The others wait in their next gradient average while rank 0 evaluates and saves: allow that
# 30 minutes (gloo's default, and HF Trainer's), not NCCL's 10.
WAIT_FOR_RANK_0 = timedelta(minutes=30)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device) -> tuple["Processes", torch.device]:
        """Join the process group the launcher set up (gloo on CPU, NCCL on GPU); returns it and
        this process's device (``cuda:LOCAL_RANK`` on GPUs)."""
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if world_size == 1:
            return cls(), device
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device, timeout=WAIT_FOR_RANK_0)
        else:
            dist.init_process_group("gloo", timeout=WAIT_FOR_RANK_0)
        processes = cls(dist.get_rank(), world_size)
        if not processes.is_main:  # one copy of the progress and log lines is enough
            logging.getLogger().setLevel(logging.WARNING)
        log.info("data-parallel training on %d processes (%s)", world_size, dist.get_backend())
        return processes, device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to call in training: ``model`` itself, or DDP around it (which starts from
        rank 0's weights and averages gradients during ``backward``)."""
        if self.world_size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def share(self, batch: Sequence[int]) -> tuple[list[int], bool]:
        """This process's rows of a global batch, and whether they count. A batch with fewer rows
        than processes leaves some empty-handed: they run the first row with zero weight, since
        every process must take part in each gradient average."""
        rows = list(batch[self.rank :: self.world_size])
        return (rows, True) if rows else (list(batch[:1]), False)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over all processes (``values`` itself in one process)."""
        if self.world_size == 1:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values

    def rank_0_says(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's ``flag`` on every process (rank 0 alone evaluates, so it decides to stop)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    @staticmethod
    def no_sync(net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Accumulating micro-batches: DDP averages gradients only in the step's last backward."""
        return contextlib.nullcontext() if sync or not isinstance(net, DistributedDataParallel) else net.no_sync()

    def close(self) -> None:
        """Leave the process group after the last collective call (the last gradient average)."""
        if self.world_size > 1:
            dist.destroy_process_group()
