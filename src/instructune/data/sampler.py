"""A shuffling sampler whose order depends only on (seed, epoch), sharded for data parallelism.

``RandomSampler`` draws from the global RNG, so a run resumed from a checkpoint would see its
batches in another order than the uninterrupted run. Lightning calls ``set_epoch`` on samplers
that have it. Under DDP (with ``use_distributed_sampler=False``, as ``conf/trainer/ddp*.yaml``
set) each rank takes its own slice of every *global* batch, so N processes at batch B see exactly
the examples one process sees at batch N*B, step for step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    def __init__(self, n: int, seed: int = 0, batch_size: int = 1) -> None:
        self.n = n
        self.seed = seed
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        world, rank = self._world()
        if world == 1:
            return order
        chunk = self.batch_size * world
        padded = -(-self.n // chunk) * chunk
        order += order[: padded - self.n]  # wrap around so every rank runs the same number of steps
        return [i for start in range(0, padded, chunk) for i in order[start + rank * self.batch_size :
                                                                      start + (rank + 1) * self.batch_size]]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        world, _ = self._world()
        if world == 1:
            return self.n
        return -(-self.n // (self.batch_size * world)) * self.batch_size
