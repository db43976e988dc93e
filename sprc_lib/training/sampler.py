"""Batches whose order depends only on (seed, epoch): reproducible, resumable, shardable over processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order depends only on (seed, epoch): reproducible, resumable, shardable.

    Each step takes one global batch of `batch_size * world_size` indices; rank r gets its slice.
    `drop_last` as the reference: an incomplete final batch is skipped.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < batch_size * world_size:
            raise ValueError(f"{size} training triplets cannot fill one batch of {batch_size} x {world_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start, self.offset = 0, 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0, offset: int = 0) -> None:
        """Iterate `epoch` from batch `start_batch`, the batches shifted by `offset` samples of the epoch's order.

        An offset arises when a run resumes with another world size after a number of samples that the
        new global batch does not divide: the epoch then goes on from the first unseen sample.
        """
        self.epoch, self.start, self.offset = epoch, start_batch, offset

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    @property
    def stop(self) -> int:
        """The batch index this epoch ends at: `len(self)`, or one less when an offset leaves no room."""
        return (self.size - self.offset) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        step = self.batch_size * self.world_size
        for b in range(self.start, self.stop):
            chunk = order[self.offset + b * step : self.offset + (b + 1) * step]
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()
