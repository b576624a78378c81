"""torch.distributed for sharding work (images, videos) over processes: one per GPU (or CPU worker).

Started by ``torchrun --nproc_per_node=K -m bmp run|eval|video ...`` (one or several nodes),
each process reads its rank from the environment torchrun sets. Without
torchrun, or with one process, nothing is initialised and every call is local.

Ranks exchange only barriers and a few small Python objects, so the process
group always uses gloo, even on GPU machines: it needs no GPU memory and no
NCCL setup, and each rank still runs its models on its own GPU
(``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a rank waits at a barrier for the others. Shards are balanced, but one
#: slow GPU or a long dataset may keep the others waiting well past gloo's default
#: 30 minutes; a crashed rank is caught by torchrun, not by this timeout.
BARRIER_TIMEOUT = timedelta(hours=6)


@dataclass
class Distributed:
    """This process's place among the processes that share the work."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share: every ``world_size``-th item from ``rank`` (balanced,
        and independent of how long each item takes)."""
        return items[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order."""
        if not self.initialised:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False


def init_distributed(device: str | None) -> tuple[Distributed, str | None]:
    """Join the process group torchrun describes, if any.

    Returns:
        The rank info, and the device this rank should use: ``cuda:LOCAL_RANK``
        when ``device`` asks for CUDA (or is unset on a CUDA machine) and several
        processes share the node, else ``device`` unchanged.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device is None or device.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return Distributed(rank, world_size, local_rank, initialised=True), device


@contextmanager
def process_group(device: str | None) -> Iterator[tuple[Distributed, str | None]]:
    """:func:`init_distributed` for the length of a command: the group is left
    again however the command ends.

    After a command that ended normally the ranks meet once more before they
    leave: no rank tears its connections down while another still finishes the
    last exchange, and gloo's threads are idle and joined by the time the
    interpreter exits (one still releasing a collective's tensors then takes the
    GIL from C++ and aborts the process: "terminate called without an active
    exception"). After an error the group is left at once: a barrier could wait
    for ranks that will never come.
    """
    dist, device = init_distributed(device)
    try:
        yield dist, device
    except BaseException:
        dist.close()
        raise
    dist.barrier()
    dist.close()
