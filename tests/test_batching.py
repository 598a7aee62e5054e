"""Batching for speed without changing the maths: packing, length grouping, token-exact gradient
accumulation, the tokenisation cache."""

import json

import lightning as L
import pytest
import torch

from instructune.data.cache import TokenCache
from instructune.batch import IGNORE_INDEX
from instructune.data.collate import CausalCollator, PackedCausalCollator, loss_token_count
from instructune.data.sampler import ExampleBatch, ExampleDataset, MicroBatch, TrainBatchSampler, pack_rows
from instructune.data.tokenize import TokenizedExample, tokenize_pairs
from instructune.models.loading import load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig

X = IGNORE_INDEX
EOS = 0


def _examples():
    return [TokenizedExample([5, 6, 7, 8, EOS], 3), TokenizedExample([9, 10, 11, 12, EOS], 2),
            TokenizedExample([13, 14, EOS], 2)]


def test_pack_rows_best_fit_decreasing():
    assert pack_rows([5, 3, 4, 2, 1], width=6) == [[0, 4], [2, 3], [1]]
    # longest first, each into the fullest row it fits: 7 and 6 open rows, 3 fits neither (free 1, 2) and
    # opens a third; 2 fills the 6's row, the first 1 the 7's, the second 1 joins the 3
    assert pack_rows([7, 1, 1, 6, 2, 3], width=8) == [[0, 1], [3, 4], [5, 2]]
    with pytest.raises(ValueError, match="more than the packing width"):
        pack_rows([9], width=8)


def test_packed_collation_restarts_positions_and_never_targets_across_documents():
    examples = ExampleBatch(_examples())
    examples.row_sizes = [2, 1]
    examples.window_tokens = 7
    batch = PackedCausalCollator(pad_id=EOS, masking=True)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, EOS, EOS, EOS, EOS, EOS, EOS]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 0, 1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1] * 8, [1, 1, 0, 0, 0, 0, 0, 0]]
    # document 1's last target is its own EOS, never document 2's first token
    assert batch["labels"].tolist() == [[X, X, 8, EOS, X, 11, 12, EOS], [X, EOS, X, X, X, X, X, X]]
    assert batch["loss_tokens_in_step"] == 7
    unmasked = PackedCausalCollator(pad_id=EOS, masking=False)(examples)
    assert unmasked["labels"].tolist()[0] == [6, 7, 8, EOS, 10, 11, 12, EOS]
    assert unmasked["response_labels"].tolist() == batch["labels"].tolist()


def test_loss_token_count_matches_the_collated_labels():
    for masking in (True, False):
        batch = CausalCollator(pad_id=EOS, masking=masking)(_examples())
        counts = [loss_token_count(e, masking) for e in _examples()]
        assert counts == (batch["labels"] != X).sum(1).tolist()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_per_example_loss_equals_unpacked(tiny_dirs, family):
    """The acceptance test for packing: every example's loss is the same packed or padded alone."""
    torch.manual_seed(0)
    model = load_model(str(tiny_dirs[family]), "causal").eval()
    module = InstructionTuningModule(model, "causal")
    gen = torch.Generator().manual_seed(1)
    examples = []
    for length, prompt in ((9, 4), (5, 2), (12, 6), (3, 1), (7, 3)):
        ids = torch.randint(3, 20, (length,), generator=gen).tolist() + [EOS]
        examples.append(TokenizedExample(ids, prompt))
    per_example = []
    for e in examples:
        batch = CausalCollator(pad_id=EOS, masking=True)([e])
        per_example.append(module.token_loss(module(batch), batch["labels"])[0].item())
    rows = pack_rows([len(e.input_ids) - 1 for e in examples], width=24)
    assert rows == [[2, 0, 3], [4, 1]]  # 12 + 9 + 3 and 7 + 5 positions: several documents really share a row
    packed_examples = ExampleBatch(examples[i] for row in rows for i in row)
    packed_examples.row_sizes = [len(row) for row in rows]
    packed = PackedCausalCollator(pad_id=EOS, masking=True)(packed_examples)
    with torch.no_grad():
        logits = module(packed)
    token_losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), packed["labels"].flatten(),
                                                     ignore_index=X, reduction="none").view_as(packed["labels"])
    order = [i for row in rows for i in row]
    at_row = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(examples[i].input_ids) - 1
            at_row[i] = (r, start, start + n)
            start += n
    for i in order:
        r, a, b = at_row[i]
        mask = packed["labels"][r, a:b] != X
        assert token_losses[r, a:b][mask].mean().item() == pytest.approx(per_example[i], abs=1e-5)


def test_sampler_is_seeded_by_epoch_and_covers_every_example_once():
    lengths = list(range(1, 41))
    sampler = TrainBatchSampler(lengths, [1] * 40, batch_size=6, seed=3)
    first = [list(b) for b in sampler]
    assert sorted(i for b in first for i in b) == list(range(40)) and len(first) == len(sampler) == 7
    assert [list(b) for b in sampler] == first
    sampler.set_epoch(1)
    second = [list(b) for b in sampler]
    assert second != first and sorted(i for b in second for i in b) == list(range(40))


class _RecordBatches(L.LightningModule):
    """Records the input ids of every training batch, by epoch; learns nothing."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.fed: dict[int, list] = {}

    def training_step(self, batch, batch_idx):
        self.fed.setdefault(self.current_epoch, []).append(batch["input_ids"].tolist())
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_each_epoch_of_a_fit_draws_its_own_order(word_tokenizer):
    """README: the data order is seeded by epoch. What a fit feeds in epoch e is the sampler's order for e."""
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import InlineSource

    records = [{"instruction": f"q {w}", "input": "", "output": w} for w in ("paris", "hello", "hi", "france", "x", "y")]
    data = InstructionDataModule(InlineSource({"train": records, "validation": records[:1]}), word_tokenizer,
                                 {"style": "custom", "template": "{instruction} :"}, batch_size=2, seed=0)
    data.setup("fit")
    loader = data.train_dataloader()
    expected = {}
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        expected[epoch] = [b["input_ids"].tolist() for b in loader]
    assert expected[0] != expected[1]
    module = _RecordBatches()
    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
              enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=data)
    assert module.fed == expected


def test_length_grouping_cuts_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (600,), generator=gen).tolist()

    def padding(sampler):
        batches = [list(b) for b in sampler]
        assert sorted(i for b in batches for i in b) == list(range(600))
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches) / sum(lengths)

    plain = padding(TrainBatchSampler(lengths, lengths, batch_size=8, seed=0))
    grouped = padding(TrainBatchSampler(lengths, lengths, batch_size=8, seed=0, group_by_length=True))
    assert grouped < plain / 5


def test_packing_sampler_yields_rows_and_accumulation_windows_count_their_tokens():
    lengths = [10, 4, 6, 3, 7, 2, 9, 5]
    loss_tokens = [3, 1, 2, 1, 4, 1, 2, 2]
    sampler = TrainBatchSampler(lengths, loss_tokens, batch_size=2, seed=0, accumulate=2, pack_width=12)
    batches = list(sampler)
    assert all(isinstance(b, MicroBatch) for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:  # every packed row fits the width
        start = 0
        for size in b.row_sizes:
            assert sum(lengths[i] for i in b[start : start + size]) <= 12
            start += size
    windows = [batches[i : i + 2] for i in range(0, len(batches), 2)]
    for window in windows:
        assert {b.window_tokens for b in window} == {sum(loss_tokens[i] for b in window for i in b)}
    dataset = ExampleDataset(list("abcdefgh"))
    fetched = dataset.__getitems__(batches[0])
    assert list(fetched) == [dataset[i] for i in batches[0]] and fetched.window_tokens == batches[0].window_tokens


class _GradientAtStep(L.Callback):
    """The accumulated gradient as the optimiser is about to use it (Adam's first step is nearly
    sign(gradient), so comparing weights after it would hide a wrong scale)."""

    grad: torch.Tensor | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grad = torch.cat([p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]).clone()


def _first_step_gradient(tiny_dirs, batch_size: int, accumulate: int) -> torch.Tensor:
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import InlineSource
    from instructune.data.tokenizer_loading import load_tokenizer

    L.seed_everything(0, verbose=False)
    # responses of very different lengths, so a mean of per-micro-batch means would weight them wrongly
    # (1, 2, 4 and 8 words: no two pairs of them have the same token count)
    answers = ["paris", "hello hello", "hi hi hi hi", "paris is the capital of france hi hi"]
    records = [{"instruction": f"q {a.split()[0]}", "input": "", "output": a} for a in answers]
    tokenizer = load_tokenizer(str(tiny_dirs["gpt2"]))
    data = InstructionDataModule(InlineSource({"train": records, "validation": records[:1]}), tokenizer,
                                 {"style": "custom", "template": "{instruction} :"}, batch_size=batch_size,
                                 seed=0, accumulate_grad_batches=accumulate)
    model = load_model(str(tiny_dirs["gpt2"]), "causal")
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=0.1, warmup_ratio=0.0, schedule="constant"))
    probe = _GradientAtStep()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        accumulate_grad_batches=accumulate, limit_val_batches=0, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, datamodule=data)
    if accumulate > 1:  # the micro-batches really differ in loss tokens (answer + EOS: 2, 3, 5 and 9)
        batches = list(data.train_dataloader())
        assert [int((b["labels"] != X).sum()) for b in batches] == [5, 14]
        assert [int(b["loss_tokens_in_step"]) for b in batches] == [19, 19]
    return probe.grad


def test_gradient_accumulation_is_token_exact(tiny_dirs):
    """2 micro-batches of 2 give exactly the gradient of one batch of 4 (a token mean over all 4)."""
    whole = _first_step_gradient(tiny_dirs, batch_size=4, accumulate=1)
    accumulated = _first_step_gradient(tiny_dirs, batch_size=2, accumulate=2)
    assert whole.abs().max() > 1e-3
    torch.testing.assert_close(accumulated, whole, atol=1e-6, rtol=1e-5)


def test_token_cache_hits_on_identical_input_and_misses_on_any_change(tmp_path, word_tokenizer):
    prompts, responses = ["what is the capital of france ?", "say hi"], ["paris", "hi"]
    cache = TokenCache(tmp_path)
    fresh = tokenize_pairs(prompts, responses, word_tokenizer, 16)
    assert cache.tokenize(prompts, responses, word_tokenizer, 16, "causal") == fresh
    [entry] = list(tmp_path.iterdir())
    stored = json.loads(entry.read_text())
    stored["examples"][0][0] = [3, 3, 3]  # tamper: a hit must come from the file
    entry.write_text(json.dumps(stored))
    assert cache.tokenize(prompts, responses, word_tokenizer, 16, "causal")[0][0].input_ids == [3, 3, 3]
    cache.tokenize(prompts, responses, word_tokenizer, 8, "causal")
    cache.tokenize(prompts, ["paris", "hello"], word_tokenizer, 16, "causal")
    assert len(list(tmp_path.iterdir())) == 3
    entry.write_text("{not json")
    assert cache.tokenize(prompts, responses, word_tokenizer, 16, "causal") == fresh  # damaged: rebuilt
