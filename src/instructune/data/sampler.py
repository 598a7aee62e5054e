"""A shuffling sampler whose order depends only on (seed, epoch).

``RandomSampler`` draws from the global RNG, so a run resumed from a checkpoint would see its
batches in another order than the uninterrupted run. Lightning calls ``set_epoch`` on samplers
that have it, as it does for ``DistributedSampler`` (which it substitutes under DDP).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n
