"""Several processes, one run: PyTorch's process group as torchrun sets it up, and the few collectives SPRC needs.

`torchrun` starts one process per GPU (or per CPU slot) and hands each its place through the environment:
`RANK` (0..WORLD_SIZE-1 over all nodes), `LOCAL_RANK` (the GPU on this node), `WORLD_SIZE`, and
`MASTER_ADDR`/`MASTER_PORT` for the rendezvous. `session()` turns that into a process group (nccl on
GPUs, gloo on CPUs); with no such environment everything here degrades to the single-process case,
so the same code runs in a notebook, under `python -m sprc_lib`, and under `torchrun`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from sprc_lib.env import pick_device

try:  # recent torch: the functional all-gather, autograd included
    from torch.distributed._functional_collectives import all_gather_single_autograd as _gather_autograd
except ImportError:  # older torch (pyproject allows >= 2.3): the autograd-aware all-gather of its day
    from torch.distributed.nn.functional import all_gather as _gather_tuple

    def _gather_autograd(tensor: Tensor, gather_dim: int, group: dist.ProcessGroup) -> Tensor:
        return torch.cat(_gather_tuple(tensor, group=group), dim=gather_dim)


# Rank 0 may build the whole frozen-ViT feature cache while the others wait at a barrier: give it time.
TIMEOUT = timedelta(hours=2)


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (or another launcher using its variables) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """A process group with more than one process is up: collectives are needed."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The process that logs, writes files and shows progress bars."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def process_device(name: str = "auto") -> torch.device:
    """This process's device: `pick_device(name)`, except that under torchrun a bare `cuda` is `cuda:LOCAL_RANK`
    (one GPU per process), made the current device because collectives and pinned memory use that one."""
    device = pick_device(name)
    if device.type == "cuda" and launched_by_torchrun():
        if device.index is None:
            device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration (nccl for GPUs, gloo for CPUs), then leave it cleanly.

    Does nothing outside torchrun, or when the caller already set a process group up (tests, notebooks):
    whoever creates the group destroys it.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may write shared files), then every other rank, one at a time.

    One at a time because the block may write (e.g. a cache's meta file) under a fixed temporary name.
    """
    if not is_distributed():
        yield
        return
    if is_main():
        yield
    for turn in range(1, world_size()):
        dist.barrier()
        if rank() == turn:
            yield
    dist.barrier()


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate every rank's `tensor` along dim 0, keeping autograd: the backward pass sends each rank
    the sum over ranks of the gradients that reached its slice (a reduce-scatter).

    That sum is what makes global in-batch negatives exact: rank r's features serve as negatives in
    every rank's loss, so their gradient collects contributions from all of them. Shapes must match
    across ranks (the sampler drops incomplete batches). Single process: `tensor` itself.
    """
    if not is_distributed():
        return tensor
    return _gather_autograd(tensor.contiguous(), 0, dist.group.WORLD)


def all_gather_rows(tensor: Tensor) -> Tensor:
    """Concatenate every rank's rows in rank order, when ranks hold different numbers of rows (no autograd).

    Pads to the longest shard for the collective, then drops the padding.
    """
    if not is_distributed():
        return tensor
    counts = torch.tensor([tensor.shape[0]], device=tensor.device)
    all_counts = [torch.zeros_like(counts) for _ in range(world_size())]
    dist.all_gather(all_counts, counts)
    sizes = [int(c.item()) for c in all_counts]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(out, sizes, strict=True)])


def all_gather_objects(obj: object) -> list:
    """Every rank's picklable `obj`, in rank order."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's picklable `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: Tensor) -> Tensor:
    """The mean over ranks of a (detached) tensor, e.g. per-rank losses for the log."""
    if not is_distributed():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / world_size()


def shard(count: int, unit: int = 1) -> range:
    """This rank's contiguous share of `count` items, cut at multiples of `unit` (a batch size), so a
    sharded pass batches items exactly as one process does and its results are bit-identical."""
    blocks = -(-count // unit)
    per_rank = -(-blocks // world_size())
    start = min(rank() * per_rank * unit, count)
    return range(start, min(start + per_rank * unit, count))
