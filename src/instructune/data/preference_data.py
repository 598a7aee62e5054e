"""Preference pairs as tokens and batches, for preference tuning (``stage=dpo``; causal models).

Each side of a pair is tokenised as instruction tuning tokenises a (prompt, response) example
(``tokenize_pairs``: prompt and answer apart, EOS after the answer), and a batch of N pairs is the
instruction-tuning batch (``CausalCollator``, masking on) of 2N rows: the N chosen answers, then the N
rejected ones, the layout TRL's ``DataCollatorForPreference`` uses. So ``labels`` hold the answer tokens
(EOS included) and IGNORE_INDEX on prompt and padding: the sum of a row's label log-probabilities is the
answer's log-probability, DPO's sequence score.

Over ``max_seq_length`` (``overlength``): ``truncate`` cuts both answers' tails to fit (a pair whose prompt
alone fills the window is dropped), ``drop`` drops the pair, ``error`` stops at it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from instructune.data.collate import CausalCollator
from instructune.data.overlap import OverlapSpec, as_overlap_spec, audit_and_decontaminate
from instructune.data.prompts import PromptStyle
from instructune.data.records import DataError, Record, RecordSource, Splits
from instructune.data.tokenize import OVERLENGTH_POLICIES, OverlengthError, TokenizedExample, tokenize_pairs

log = logging.getLogger(__name__)

UNLIMITED = 1 << 62  # tokenize_pairs' window when the pair, not each side, decides what is cut


@dataclass(frozen=True)
class PreferencePair:
    """The prompt + chosen answer and the prompt + rejected answer, as two causal examples."""

    chosen: TokenizedExample
    rejected: TokenizedExample


@dataclass(frozen=True)
class PairStats:
    kept: int
    truncated: int
    dropped: int


def tokenize_preferences(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], tokenizer: Any,
                         max_seq_length: int, overlength: str = "truncate") -> tuple[list[PreferencePair], PairStats]:
    """Both sides tokenised like instruction examples, then cut or dropped together (module docstring)."""
    if overlength not in OVERLENGTH_POLICIES:
        raise ValueError(f"overlength must be one of {', '.join(OVERLENGTH_POLICIES)}, got {overlength!r}")
    good, _ = tokenize_pairs(prompts, chosen, tokenizer, UNLIMITED)
    bad, _ = tokenize_pairs(prompts, rejected, tokenizer, UNLIMITED)
    pairs: list[PreferencePair] = []
    truncated = dropped = 0
    for i, (c, r) in enumerate(zip(good, bad, strict=True)):
        longest = max(len(c.input_ids), len(r.input_ids))
        if c.prompt_length >= max_seq_length or (longest > max_seq_length and overlength == "drop"):
            dropped += 1
            continue
        if longest > max_seq_length:
            if overlength == "error":
                raise OverlengthError(i, longest, max_seq_length)
            truncated += 1
            c, r = (TokenizedExample(e.input_ids[:max_seq_length], e.prompt_length) for e in (c, r))
        pairs.append(PreferencePair(c, r))
    return pairs, PairStats(len(pairs), truncated, dropped)


@dataclass(frozen=True)
class PreferenceCollator:
    """N pairs -> one causal batch of 2N rows, chosen first (module docstring)."""

    pad_id: int
    pad_to_multiple_of: int | None = None
    max_width: int | None = None

    def __call__(self, pairs: Sequence[PreferencePair]) -> dict[str, torch.Tensor]:
        rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        return CausalCollator(self.pad_id, masking=True, pad_to_multiple_of=self.pad_to_multiple_of,
                              max_width=self.max_width)(rows)


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs of a source whose records carry ``rejected`` (``PreferenceFileSource``,
    ``world.preferences.WorldPreferenceSource``), formatted with ``prompt_style`` (the instruction-tuned
    run's own). ``records`` and ``format_prompt`` are those of ``InstructionDataModule``, so
    ``SplitEvaluation`` scores generations on these records (reference: the chosen answer)."""

    def __init__(self, source: RecordSource, tokenizer: Any, prompt_style: PromptStyle, max_seq_length: int = 512,
                 batch_size: int = 8, eval_batch_size: int | None = None, num_workers: int = 0,
                 pad_to_multiple_of: int | None = None, seed: int = 0, overlength: str = "truncate",
                 drop_last: bool = False, overlap: OverlapSpec | dict[str, Any] | None = None,
                 decontaminate: bool = False, stop: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.source, self.tokenizer, self.prompt_style = source, tokenizer, prompt_style
        self.max_seq_length, self.overlength, self.seed = max_seq_length, overlength, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.drop_last = num_workers, drop_last
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.collate = PreferenceCollator(pad_id, pad_to_multiple_of, max_seq_length)
        self.records: Splits = {}
        self.examples: dict[str, list[PreferencePair]] = {}
        self.length_report: dict[str, dict[str, Any]] = {"truncated": {}, "dropped": {}}
        # the train/eval overlap audit of the pairs (prompt + chosen answer), as instruction data gets it
        self.overlap_spec, self.decontaminate = as_overlap_spec(overlap), decontaminate
        self.overlap_report: dict[str, Any] | None = None
        self.stop = tuple(stop)  # a conversation start: its evaluation stops at the end-of-turn marker

    @property
    def source_name(self) -> str:
        return getattr(self.source, "path", None) or getattr(self.source, "name", None) or type(self.source).__name__

    def format_prompt(self, record: Record) -> str:
        return self.prompt_style.format(record["instruction"], record.get("input", ""), self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.examples:
            return
        self.records = self.source.load()
        self.overlap_report = audit_and_decontaminate(self.records, self.overlap_spec, self.decontaminate)
        for split, records in self.records.items():
            lacking = next((i for i, r in enumerate(records) if not r.get("rejected")), None)
            if lacking is not None:
                raise DataError(f"{self.source_name} [{split} split]: record {lacking} has no rejected answer; "
                                "preference tuning needs chosen and rejected answers")
            try:
                pairs, stats = tokenize_preferences([self.format_prompt(r) for r in records],
                                                    [r["output"] for r in records], [r["rejected"] for r in records],
                                                    self.tokenizer, self.max_seq_length, self.overlength)
            except OverlengthError as e:
                raise DataError(f"{self.source_name} [{split} split] pair {e}: raise data.max_seq_length, or set "
                                "data.overlength=truncate or drop") from None
            self.length_report["truncated"][split], self.length_report["dropped"][split] = stats.truncated, stats.dropped
            if stats.dropped or stats.truncated:
                log.info("%s: %d pair(s) truncated, %d dropped at max_seq_length=%d", split, stats.truncated,
                         stats.dropped, self.max_seq_length)
            self.examples[split] = pairs
        if stage in (None, "fit") and not self.examples.get("train"):
            raise DataError(f"{self.source_name}: no preference pair to train on (the train split is empty)")

    def loader(self, split: str, shuffle: bool = False, limit: int | None = None) -> DataLoader:
        """Batches of ``split``'s pairs (its first ``limit``), chosen rows first in each batch."""
        pairs = self.examples.get(split, [])[:limit] if limit else self.examples.get(split, [])
        return DataLoader(pairs, batch_size=self.batch_size if shuffle else self.eval_batch_size, shuffle=shuffle,
                          collate_fn=self.collate, num_workers=self.num_workers, drop_last=shuffle and self.drop_last,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


__all__ = ["PreferencePair", "PairStats", "tokenize_preferences", "PreferenceCollator", "PreferenceDataModule"]
