"""The training batch sampler: seeded order, optional length grouping or packing, DDP slices of the
global batch, and the loss-token count of each gradient-accumulation window.

Why not ``RandomSampler`` + ``DistributedSampler`` + HF's ``LengthGroupedSampler``:
- the order must depend only on (seed, epoch), not on the global RNG that dropout also draws from,
  or a run resumed from a checkpoint sees other batches than the uninterrupted one;
- under DDP (``use_distributed_sampler=False``, as ``conf/trainer/ddp*.yaml`` set) each rank takes
  its slice of every *global* batch, so N processes at batch B see exactly what one process sees
  at batch N*B, step for step (``DistributedSampler`` strides over the whole epoch instead);
- a correct token-level loss under gradient accumulation needs the number of loss-bearing tokens
  of the whole accumulation window (every micro-batch, every rank) before its first micro-batch is
  run. The sampler is the one place that knows the window in advance, so it attaches that count
  to each micro-batch (``MicroBatch.window_tokens``); ``ExampleDataset.__getitems__`` carries it to
  the collator, which puts it in the batch as ``loss_tokens_in_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

MEGABATCH_FACTOR = 50  # length grouping sorts within windows of 50 global batches (as HF's LengthGroupedSampler)


class MicroBatch(list):
    """Indices of one rank's micro-batch, plus the loss-token count of its accumulation window and
    (packing) how many consecutive examples share each row."""

    window_tokens: int | None = None
    row_sizes: list[int] | None = None


class ExampleBatch(list):
    """The examples of one micro-batch as the collator receives them (see ``ExampleDataset``)."""

    window_tokens: int | None = None
    row_sizes: list[int] | None = None


class ExampleDataset(Dataset):
    """A list of examples whose batched fetch keeps the sampler's window token count."""

    def __init__(self, examples: Sequence[Any]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Any:
        return self.examples[index]

    def __getitems__(self, indices: Sequence[int]) -> ExampleBatch:
        batch = ExampleBatch(self.examples[i] for i in indices)
        batch.window_tokens = getattr(indices, "window_tokens", None)
        batch.row_sizes = getattr(indices, "row_sizes", None)
        return batch


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of sequences (``lengths`` = positions each one fills) into rows
    of ``width`` positions; returns the example indices of each row, longest first within a row.

    Buckets rows by free space, so each placement scans at most ``width`` buckets (no O(n * rows))."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []  # free positions of each row
    free_buckets: list[list[int]] = [[] for _ in range(width + 1)]  # free space -> row ids
    for i in order:
        need = lengths[i]
        if need > width:
            raise ValueError(f"example {i} fills {need} positions, more than the packing width {width}")
        row = next((free_buckets[f].pop() for f in range(need, width + 1) if free_buckets[f]), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= need
        free_buckets[free[row]].append(row)
    return rows


class _EpochHook:
    """What Lightning finds at ``batch_sampler.sampler``: passes ``set_epoch`` on to the batch sampler."""

    def __init__(self, owner: TrainBatchSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class TrainBatchSampler(Sampler[MicroBatch]):
    """Yields this rank's micro-batches of example indices for one epoch.

    A *unit* is what fills one row of a batch: one example, or (``pack_width``) several examples
    packed into one row. Units are shuffled by (seed, epoch); with ``group_by_length`` they are then
    sorted by length inside windows of ``MEGABATCH_FACTOR`` global batches and the resulting batches
    shuffled, so batches hold similar lengths (little padding) but epochs still differ.
    ``drop_last`` drops the epoch's last global batch when it is partial (one odd batch shape per epoch
    costs a GPU a new kernel plan or a recompile), unless it is the only batch.

    ``epoch_examples`` (a training mixture, ``data/mixture.py``): the example indices of each epoch, repeats
    allowed, in place of every example once. ``tally`` is called with the indices of each global micro-batch
(all ranks' slices; the same on every rank, so rank 0's count is the run's).
    """

    def __init__(self, lengths: Sequence[int], loss_tokens: Sequence[int], batch_size: int, seed: int = 0,
                 group_by_length: bool = False, accumulate: int = 1, pack_width: int | None = None,
                 drop_last: bool = False, epoch_examples: Callable[[int], list[int]] | None = None,
                 tally: Callable[[Sequence[int]], None] | None = None) -> None:
        if len(lengths) != len(loss_tokens):
            raise ValueError("lengths and loss_tokens must have one entry per example")
        self.lengths, self.loss_tokens = list(lengths), list(loss_tokens)
        self.batch_size, self.seed, self.accumulate = batch_size, seed, max(int(accumulate), 1)
        self.group_by_length, self.drop_last = group_by_length, drop_last
        self.packed, self.pack_width = bool(pack_width), pack_width
        self.epoch_examples, self.tally = epoch_examples, tally
        self.epoch = 0
        self.units = self._units()
        # Lightning calls set_epoch on dataloader.sampler and dataloader.batch_sampler.sampler only, never
        # on a batch sampler itself: without this hook every epoch of a fit would repeat epoch 0's order
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch and self.epoch_examples is not None:
            self.epoch = epoch
            self.units = self._units()
        self.epoch = epoch

    def _units(self) -> list[list[int]]:
        """What fills each row this epoch: one example, or several packed together."""
        examples = self.epoch_examples(self.epoch) if self.epoch_examples is not None else range(len(self.lengths))
        examples = list(examples)
        if not self.pack_width:
            return [[i] for i in examples]
        rows = pack_rows([self.lengths[i] for i in examples], self.pack_width)
        return [[examples[k] for k in row] for row in rows]

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _global_batches(self, world: int) -> list[list[int]]:
        """Unit ids of each global batch (``batch_size * world`` units), in epoch order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.units), generator=generator).tolist()
        chunk = self.batch_size * world
        if world > 1:  # wrap around so every rank runs the same number of steps
            order += order[: -(-len(order) // chunk) * chunk - len(order)]
        if self.group_by_length:
            size = lambda u: sum(self.lengths[i] for i in self.units[u])  # noqa: E731
            mega = chunk * MEGABATCH_FACTOR
            order = [u for s in range(0, len(order), mega) for u in sorted(order[s : s + mega], key=size, reverse=True)]
        batches = [order[s : s + chunk] for s in range(0, len(order), chunk)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < chunk:
            batches.pop()
        if self.group_by_length:
            shuffle = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in shuffle]
        return batches

    def __iter__(self) -> Iterator[MicroBatch]:
        world, rank = self._world()
        batches = self._global_batches(world)
        for start in range(0, len(batches), self.accumulate):
            window = batches[start : start + self.accumulate]
            tokens = sum(self.loss_tokens[i] for batch in window for u in batch for i in self.units[u])
            for batch in window:
                if self.tally is not None:  # the global batch, every rank's slice: what the step trains on
                    self.tally([i for u in batch for i in self.units[u]])
                units = [self.units[u] for u in batch[rank * self.batch_size : (rank + 1) * self.batch_size]]
                mine = MicroBatch(i for unit in units for i in unit)
                mine.window_tokens = tokens
                mine.row_sizes = [len(unit) for unit in units] if self.packed else None
                yield mine

    def __len__(self) -> int:
        world, _ = self._world()
        chunk = self.batch_size * world
        if self.drop_last and len(self.units) > chunk:
            return len(self.units) // chunk
        return -(-len(self.units) // chunk)
