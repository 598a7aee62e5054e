"""Training mixtures: how each epoch draws from the groups (tasks or sources) of the train split.

The FLAN / T5 recipe (Raffel et al. 2020, §3.5.2; Chung et al. 2022): *examples-proportional* mixing gives
group i the rate r_i ∝ min(n_i, K)^(1/T), a cap K keeping the largest groups from drowning the rest and a
temperature T flattening the rates further (T → ∞: every group the same share). Explicit ``weights`` give
the shares directly. ``balance: task`` is the shorthand for equal shares per task.

Each epoch draws c_i = the rate's share of the epoch (largest-remainder rounding, so the counts sum to the
epoch size exactly and every epoch holds the same number of examples) from group i. A group is read as an
endless stream of seeded permutations of its records, epoch e taking items e·c_i to (e+1)·c_i − 1: a capped
group's records all get their turn across epochs, an upsampled group repeats in whole passes, and after any
number of epochs every record of a group has been drawn equally often, give or take one. The draw depends on
(seed, group, epoch) alone, so a run resumed at an epoch boundary continues the same mix.

Why not ``datasets.interleave_datasets``: it samples example by example (the counts vary run to run), has no
cap or temperature, and works on a Dataset of records, not on the tokenised examples the sampler orders;
seqio's mixtures need TensorFlow.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instructune.data.records import DataError

GROUPINGS = ("task", "source")


@dataclass(frozen=True)
class MixtureSpec:
    """``data.mixture``: ``by`` (task | source; None: no mixing, every record once per epoch), and either
    ``weights`` ({group: weight}) or examples-proportional rates with ``cap`` (K) and ``temperature`` (T).
    ``epoch_size``: records per epoch (None: Σ min(n_i, K) with a cap, else the train split's size)."""

    by: str | None = None
    weights: Mapping[str, float] | None = None
    cap: int | None = None
    temperature: float = 1.0
    epoch_size: int | None = None

    def __post_init__(self) -> None:
        if self.by is not None and self.by not in GROUPINGS:
            raise DataError(f"data.mixture.by must be one of {', '.join(GROUPINGS)} (or null), got {self.by!r}")
        if self.weights is not None and (self.cap is not None or self.temperature != 1.0):
            raise DataError("data.mixture: give either weights or examples-proportional rates (cap, temperature), "
                            "not both")
        if self.cap is not None and self.cap < 1:
            raise DataError(f"data.mixture.cap must be a positive number of records, got {self.cap}")
        if not self.temperature > 0:
            raise DataError(f"data.mixture.temperature must be positive (inf: equal shares), got {self.temperature}")
        if self.epoch_size is not None and self.epoch_size < 1:
            raise DataError(f"data.mixture.epoch_size must be positive, got {self.epoch_size}")
        if self.weights is not None and any(not w >= 0 for w in self.weights.values()):
            raise DataError(f"data.mixture.weights must be non-negative, got {dict(self.weights)}")
        unused = [k for k, v in (("weights", self.weights), ("cap", self.cap), ("epoch_size", self.epoch_size))
                  if v is not None] + (["temperature"] if self.temperature != 1.0 else [])
        if self.by is None and unused:
            raise DataError(f"data.mixture.{unused[0]} is set but data.mixture.by is null (no mixing): set "
                            "data.mixture.by=task or source, or drop it")

    @property
    def active(self) -> bool:
        return self.by is not None


def make_mixture(mixture: MixtureSpec | Mapping[str, Any] | None, balance: str | None) -> MixtureSpec:
    """The spec from ``data.mixture`` and ``data.balance`` (``task``: equal shares per task)."""
    if balance is not None:  # equal shares per task; data.mixture may still set cap and epoch_size
        if balance != "task":
            raise DataError(f"data.balance must be 'task' or null, got {balance!r}")
        given = dict(mixture.__dict__ if isinstance(mixture, MixtureSpec) else mixture or {})
        if given.get("by") or given.get("weights") is not None or given.get("temperature", 1.0) != 1.0:
            raise DataError("data.balance=task with data.mixture.by, weights or temperature: balance is the "
                            "shorthand for data.mixture.by=task data.mixture.temperature=inf; keep one")
        given.update(by="task", temperature=math.inf)
        mixture = given
    try:
        return mixture if isinstance(mixture, MixtureSpec) else MixtureSpec(**dict(mixture or {}))
    except TypeError as e:
        raise DataError(f"data.mixture: {e}".replace("MixtureSpec.__init__() ", "")) from None


def mixing_rates(sizes: Mapping[str, int], spec: MixtureSpec) -> dict[str, float]:
    """Each group's share of an epoch (summing to 1)."""
    if spec.weights is not None:
        missing, unknown = sorted(set(sizes) - set(spec.weights)), sorted(set(spec.weights) - set(sizes))
        if missing or unknown:
            what = (f"no weight for group(s) {', '.join(missing)}" if missing
                    else f"a weight for {', '.join(unknown)}, which no training record has")
            raise DataError(f"data.mixture.weights has {what} (groups by {spec.by}: {', '.join(sorted(sizes))})")
        raw = {g: float(spec.weights[g]) for g in sizes}
    else:
        capped = {g: min(n, spec.cap) if spec.cap is not None else n for g, n in sizes.items()}
        raw = {g: (1.0 if n else 0.0) if math.isinf(spec.temperature) else n ** (1.0 / spec.temperature)
               for g, n in capped.items()}
    total = sum(raw.values())
    if total <= 0:
        raise DataError(f"data.mixture: every group has weight 0 (groups: {', '.join(sorted(sizes))})")
    return {g: w / total for g, w in raw.items()}


def epoch_counts(rates: Mapping[str, float], epoch_size: int) -> dict[str, int]:
    """Records per group per epoch: the rates' shares of ``epoch_size``, largest remainders rounded up."""
    exact = {g: r * epoch_size for g, r in rates.items()}
    counts = {g: math.floor(x) for g, x in exact.items()}
    short = epoch_size - sum(counts.values())
    for g in sorted(exact, key=lambda g: (counts[g] - exact[g], g))[:short]:
        counts[g] += 1
    return counts


class EpochMix:
    """Which training examples each epoch holds, and how many of each group the sampler has handed out.

    ``groups``: the group of every tokenised training example (in example order)."""

    def __init__(self, groups: Sequence[str], spec: MixtureSpec, seed: int = 0) -> None:
        self.spec, self.seed = spec, seed
        self.members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            self.members.setdefault(g, []).append(i)
        self.sizes = {g: len(m) for g, m in sorted(self.members.items())}
        self.rates = mixing_rates(self.sizes, spec)
        default = (sum(min(n, spec.cap) for n in self.sizes.values()) if spec.cap is not None and spec.weights is None
                   else len(groups))
        self.epoch_size = spec.epoch_size or default
        self.counts = epoch_counts(self.rates, self.epoch_size)
        self.tally = GroupTally(groups)

    def indices(self, epoch: int) -> list[int]:
        """The example indices of ``epoch`` (grouped; the sampler shuffles them): items ``epoch * c`` to
        ``(epoch + 1) * c - 1`` of each group's stream of permutations (module docstring)."""
        chosen: list[int] = []
        for g, count in self.counts.items():
            members = self.members[g]
            n, start = len(members), epoch * count
            for cycle in range(start // n, -(-(start + count) // n)):
                lo, hi = max(start, cycle * n) - cycle * n, min(start + count, (cycle + 1) * n) - cycle * n
                chosen += [members[k] for k in self._permutation(g, cycle, n)[lo:hi]]
        return chosen

    def _permutation(self, group: str, cycle: int, n: int) -> list[int]:
        key = hashlib.sha256(f"{self.seed}/{group}/{cycle}".encode()).digest()
        return torch.randperm(n, generator=torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))).tolist()

    def report(self) -> dict[str, Any]:
        """summary.json ``mixture``: the spec, and per group its records, rate, per-epoch count and the
        number of examples training actually drew (``drawn``; a partial last epoch counts what it used)."""
        spec = self.spec
        return {
            "by": spec.by, "weights": dict(spec.weights) if spec.weights is not None else None, "cap": spec.cap,
            "temperature": "inf" if math.isinf(spec.temperature) else spec.temperature, "epoch_size": self.epoch_size,
            "groups": {g: {"records": n, "rate": round(self.rates[g], 6), "per_epoch": self.counts[g],
                           "drawn": self.tally.drawn.get(g, 0)} for g, n in self.sizes.items()},
        }


class GroupTally:
    """How many examples of each group the sampler has handed to training (the realised mix).

    Counted where the batch sampler yields, in the main process: with ``num_workers`` > 0 the loader's
    prefetch of a few batches past the last step is counted too."""

    def __init__(self, groups: Sequence[str]) -> None:
        self.groups = list(groups)
        self.drawn: Counter[str] = Counter()

    def __call__(self, indices: Sequence[int]) -> None:
        self.drawn.update(self.groups[i] for i in indices)

    def report(self) -> dict[str, Any]:
        """summary.json ``mixture`` of an unmixed run: each task's training records and draws."""
        sizes = Counter(self.groups)
        return {"by": None,
                "groups": {g: {"records": n, "drawn": self.drawn.get(g, 0)} for g, n in sorted(sizes.items())}}


def record_groups(records: Sequence[Mapping[str, Any]], by: str, where: str) -> list[str]:
    """The mixing group (``task`` or ``source`` field) of every training record."""
    groups = [r.get(by) for r in records]
    missing = sum(g is None or g == "" for g in groups)
    if missing:
        hint = ("map a column to it with data.source.fields.task=<column>" if by == "task"
                else "mix several sources with data=mixture (data.source.components)")
        raise DataError(f"{where}: data.mixture.by={by}: {missing} of {len(groups)} training record(s) have no "
                        f"{by}; {hint}")
    return [str(g) for g in groups]


class MixtureSource:
    """Several record sources as one (``data=mixture``): each split is the concatenation of the components'
    splits, every record tagged with its ``source`` (the component's name), which also becomes its ``task``
    where it has none, so the evaluation scores each untasked source on its own (``task/<source>``)."""

    def __init__(self, components: Mapping[str, Any]) -> None:
        if not components:
            raise DataError("data.source.components: name at least one source to mix")
        self.components = dict(components)
        self.name = "+".join(self.components)

    def load(self) -> dict[str, list[dict[str, Any]]]:
        splits: dict[str, list[dict[str, Any]]] = {}
        for name, source in self.components.items():
            for split, records in source.load().items():
                splits.setdefault(split, []).extend(
                    {**r, "source": name, "task": r.get("task") or name} for r in records)
        return splits
