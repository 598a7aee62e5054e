"""The Lightning data module: instruction records → prompts → tokens → batches."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from instructune.data.cache import TokenCache
from instructune.data.collate import (CausalCollator, PackedCausalCollator, Seq2SeqCollator, loss_token_count,
                                      prompt_loss_weight)
from instructune.data.conversations import ChatFormat, check_format, tokenize_conversations
from instructune.data.mixture import EpochMix, GroupTally, MixtureSource, MixtureSpec, make_mixture, record_groups
from instructune.data.overlap import OverlapSpec, as_overlap_spec, audit_and_decontaminate
from instructune.data.prompts import PromptStyle, make_prompt_style
from instructune.data.records import DataError, Record, RecordSource, Splits
from instructune.data.sampler import ExampleDataset, TrainBatchSampler
from instructune.data.tokenize import OverlengthError, TokenizedExample, token_lengths, tokenize_pairs

log = logging.getLogger(__name__)


class InstructionDataModule(L.LightningDataModule):
    """Instruction tuning data for causal or seq2seq models.

    ``masking`` (causal only) sets every prompt token's target to IGNORE_INDEX so the loss covers the
    response alone; ``prompt_weight`` (when set, it replaces ``masking``: 0 masks, 1 does not) weighs
    prompt tokens in the loss by it. Validation always scores response tokens only (``response_labels``).

    Training batches: ``group_by_length`` batches similar lengths together (less padding);
    ``packing`` (causal only) fills each row of ``max_seq_length`` positions with several examples
    (``batch_size`` then counts rows). Validation and test batches are never packed or grouped.
    ``pad_to_multiple_of`` and ``drop_last`` keep GPU batch shapes few (``instructune.speed`` picks them
    per device). ``accumulate_grad_batches`` must match the Trainer's: the sampler counts loss tokens per
    accumulation window so the loss is a true token mean over the whole optimiser step.

    ``format=messages``: the records are conversations (``data/conversations.py``), rendered with the
    tokenizer's chat template (``chat_template``: another one, or the built-in one for a base without one),
    and the loss covers every assistant turn, its end-of-turn marker included; non-assistant tokens are the
    "prompt" that ``masking`` / ``prompt_weight`` govern. Evaluation prompts are the turns before the last
    answer plus the generation prompt, and generation stops at the end-of-turn marker (``stop``). Seq2seq:
    the history feeds the encoder and the last assistant turn is the decoder's target (loss on it alone).

    ``mixture`` / ``balance`` (``data/mixture.py``) decide how each training epoch draws from the tasks or
    sources (``mix_with``: more sources, mixed with ``source``, which the mixture calls ``source_name``);
    every run audits train ↔ evaluation overlap (``data/overlap.py``, ``overlap`` its settings) and
    ``decontaminate`` drops the training records involved. Both land in summary.json.
    """

    def __init__(
        self,
        source: RecordSource,
        tokenizer: Any,
        prompt: PromptStyle | dict[str, Any] | str = "alpaca",
        masking: bool = True,
        architecture: str = "causal",
        max_seq_length: int = 512,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        group_by_length: bool = False,
        packing: bool = False,
        accumulate_grad_batches: int = 1,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        overlength: str = "truncate",
        drop_last: bool = False,
        prompt_weight: float | None = None,
        format: str = "instructions",  # data.format: instructions | messages
        chat_template: str | None = None,
        mixture: MixtureSpec | dict[str, Any] | None = None,
        balance: str | None = None,
        overlap: OverlapSpec | dict[str, Any] | None = None,
        decontaminate: bool = False,
        mix_with: dict[str, RecordSource] | None = None,
        source_name: str = "main",
    ) -> None:
        super().__init__()
        self.source = MixtureSource({source_name: source, **mix_with}) if mix_with else source
        self.seed = seed
        self.tokenizer = tokenizer
        self.prompt_style = _as_style(prompt)
        self.format = check_format(format)
        self.chat: ChatFormat | None = None
        self.stop: tuple[str, ...] = ()  # generation stops at these texts (and EOS)
        self.prompt_special_tokens = True  # evaluation prompts get the tokenizer's special tokens
        if self.format == "messages":
            # the template is set on the tokenizer (and so exported with the model); the saved prompt style is
            # `chat`, which renders a single instruction with that same template
            self.chat = ChatFormat(tokenizer, chat_template, bos_in_text=architecture == "causal")
            self.prompt_style = PromptStyle("chat")
            if architecture == "causal":
                self.stop, self.prompt_special_tokens = (self.chat.end_of_turn,), False
        self.prompt_weight = prompt_loss_weight(masking, prompt_weight)
        self.masking = self.prompt_weight == 0
        self.architecture = architecture
        self.max_seq_length = max_seq_length
        self.overlength = overlength
        # per split: records cut to max_seq_length, and dropped for it (summary.json reports both)
        self.length_report: dict[str, dict[str, Any]] = {"truncated": {}, "dropped": {}, "tokens": {}}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        if packing and architecture != "causal":
            raise DataError("data.packing: only causal models can be packed (a seq2seq encoder has no "
                            "per-document position ids); set data.packing=false")
        self.group_by_length, self.packing, self.drop_last = group_by_length, packing, drop_last
        self.accumulate_grad_batches = accumulate_grad_batches
        self.cache = TokenCache(cache_dir) if cache else None
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.collate = (
            Seq2SeqCollator(pad_id, pad_to_multiple_of)
            if architecture == "seq2seq"
            else CausalCollator(pad_id, self.masking, pad_to_multiple_of, self.prompt_weight, max_seq_length)
        )
        self.train_collate = (PackedCausalCollator(pad_id, self.masking, pad_to_multiple_of, self.prompt_weight,
                                                   max_seq_length) if packing else self.collate)
        self.mixture = make_mixture(mixture, balance)
        self.overlap_spec = as_overlap_spec(overlap)
        self.decontaminate = decontaminate
        self.overlap_report: dict[str, Any] | None = None
        self.mix: EpochMix | None = None
        self.tally: GroupTally | None = None
        self._restored_drawn: dict[str, int] = {}  # a checkpoint's draws, applied once the tally exists
        self.records: Splits = {}
        self.examples: dict[str, list[TokenizedExample]] = {}

    @property
    def source_name(self) -> str:
        """What error messages call the data: its file or dataset name."""
        return getattr(self.source, "path", None) or getattr(self.source, "name", None) or "data"

    def format_prompt(self, record: Record) -> str:
        if self.chat is not None:  # a conversation: the turns before its last answer, and the generation prompt
            return self.chat.prompt(record["messages"][:-1])
        return self.prompt_style.format(record["instruction"], record.get("input", ""), self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.examples:
            return
        if self.architecture == "seq2seq":
            log.info("seq2seq: the prompt feeds the encoder and the loss covers the response only, "
                     "so masking=%s changes nothing for this model", self.masking)
            if 0 < self.prompt_weight < 1:
                log.warning("loss.prompt_weight=%g has no effect on a seq2seq model: its decoder never sees the "
                            "prompt, so every lambda trains the same model", self.prompt_weight)
        else:
            covers = ("response tokens only" if self.masking else "prompt and response tokens" if self.prompt_weight == 1
                      else f"response tokens, and prompt tokens at weight {self.prompt_weight:g}")
            log.info("prompt-loss weight %g: the training loss covers %s; validation loss always covers response "
                     "tokens only", self.prompt_weight, covers)
        # One process per node prepares (downloads, caches) at a time: under SLURM or torchrun all
        # ranks start together, and the first one in warms the cache for the rest.
        from filelock import FileLock

        with FileLock(str(Path(tempfile.gettempdir()) / "instructune-data-prepare.lock")):
            self.records = self.source.load()
        if self.chat is not None:
            self._check_conversations()
        self.overlap_report = audit_and_decontaminate(self.records, self.overlap_spec, self.decontaminate)
        for split, records in self.records.items():
            try:
                if self.chat is not None and self.architecture == "causal":  # loss on every assistant turn
                    examples, stats = tokenize_conversations([r["messages"] for r in records], self.chat,
                                                             self.max_seq_length, self.overlength,
                                                             f"{self.source_name} [{split} split]")
                else:
                    prompts = [self.format_prompt(r) for r in records]
                    responses = [r["output"] for r in records]
                    tokenize = self.cache.tokenize if self.cache is not None else tokenize_pairs
                    examples, stats = tokenize(prompts, responses, self.tokenizer, self.max_seq_length,
                                               self.architecture, self.overlength)
            except OverlengthError as e:
                start = records[e.index]["instruction"][:50]
                raise DataError(f"{self.source_name} [{split} split] {e} (instruction {start!r}): raise data.max_seq_length "
                                "(up to what the model takes), or set data.overlength=truncate or drop") from None
            dropped = stats.dropped_empty_response + stats.dropped_overlength
            self.length_report["truncated"][split] = stats.truncated
            self.length_report["dropped"][split] = dropped
            self.length_report["tokens"][split] = token_lengths(examples)
            if dropped:
                log.warning("%s: dropped %d of %d record(s) over max_seq_length=%d (%s)", split, dropped,
                            len(records), self.max_seq_length,
                            "data.overlength=drop" if stats.dropped_overlength else "the prompt alone fills it")
            if stats.truncated:
                log.info("%s: truncated %d record(s) to max_seq_length=%d (response tail cut)",
                         split, stats.truncated, self.max_seq_length)
            if records and not examples:
                raise DataError(f"{split} split: every one of {len(records)} record(s) was dropped by "
                                f"max_seq_length={self.max_seq_length}; raise data.max_seq_length")
            self.examples[split] = examples
            if split == "train":
                self._plan_mixture([records[i] for i in stats.kept_indices or range(len(examples))])
        if stage in (None, "fit") and not self.examples.get("train"):
            raise DataError(f"{self.source_name}: the train split is empty after loading and filtering; nothing to train on")

    def _plan_mixture(self, train: list[Record]) -> None:
        """The epoch mix of the tokenised training examples (``train``: their records, in order)."""
        if self.mixture.active:
            groups = record_groups(train, self.mixture.by, self.source_name)
            self.mix = EpochMix(groups, self.mixture, self.seed)
            self.tally = self.mix.tally
            log.info("mixture by %s: %d group(s), %d examples per epoch (%s)", self.mixture.by, len(self.mix.sizes),
                     self.mix.epoch_size, ", ".join(f"{g} {c}" for g, c in list(self.mix.counts.items())[:8]))
        elif any(r.get("task") for r in train):
            self.tally = GroupTally([r.get("task") or "(none)" for r in train])
        if self.tally is not None and self._restored_drawn:
            self.tally.drawn.update(self._restored_drawn)

    def state_dict(self) -> dict[str, Any]:
        """Kept in checkpoints (Lightning saves a data module's state): the draws so far, so the summary of a
        resumed run counts the whole run's training mix."""
        return {"drawn": dict(self.tally.drawn)} if self.tally is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_drawn = dict(state_dict.get("drawn") or {})
        if self.tally is not None:
            self.tally.drawn.clear()
            self.tally.drawn.update(self._restored_drawn)

    def mixture_report(self) -> dict[str, Any] | None:
        """summary.json ``mixture``: per group (task or source) its records, rate, per-epoch count and draws."""
        return self.mix.report() if self.mix is not None else self.tally.report() if self.tally is not None else None

    def _check_conversations(self) -> None:
        if any("messages" not in r for records in self.records.values() for r in records):
            raise DataError(f"data.format=messages: {self.source_name} gives records without turns ('messages'); "
                            "its source needs format=messages too (data.source.format)")
        train = self.records.get("train", [])
        if self.architecture == "seq2seq":
            log.info("conversations, seq2seq: the turns before the last answer feed the encoder, the last answer "
                     "is the decoder's target")
        else:
            assert self.chat is not None
            turns = sum(m["role"] == "assistant" for r in train for m in r["messages"])
            log.info("conversations: the loss covers all %d assistant turns of %d training conversations, each with "
                     "its end-of-turn marker %r (where generation stops)", turns, len(train), self.chat.end_of_turn)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        examples = self.examples[split]
        common: dict[str, Any] = {
            "collate_fn": self.train_collate if shuffle else self.collate,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
            # workers' base seed from a private generator, not the global RNG that dropout uses
            "generator": torch.Generator().manual_seed(self.seed),
        }
        if not shuffle:
            return DataLoader(ExampleDataset(examples), batch_size=self.eval_batch_size, **common)
        sampler = TrainBatchSampler(
            lengths=[len(e.input_ids) - 1 if self.architecture == "causal" else len(e.input_ids) + len(e.labels or [])
                     for e in examples],
            loss_tokens=[loss_token_count(e, self.masking, self.architecture, self.prompt_weight) for e in examples],
            batch_size=self.batch_size, seed=self.seed, group_by_length=self.group_by_length,
            accumulate=self.accumulate_grad_batches, pack_width=self.max_seq_length if self.packing else None,
            drop_last=self.drop_last, epoch_examples=self.mix.indices if self.mix is not None else None,
            tally=self.tally)
        return DataLoader(ExampleDataset(examples), batch_sampler=sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _as_style(prompt: PromptStyle | dict[str, Any] | str) -> PromptStyle:
    if isinstance(prompt, PromptStyle):
        return prompt
    if isinstance(prompt, str):
        return make_prompt_style(prompt)
    return make_prompt_style(prompt.get("style", "alpaca"), prompt.get("template"), prompt.get("template_no_input"))
