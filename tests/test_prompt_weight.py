"""The prompt-loss weight (``loss.prompt_weight``, lambda): prompt targets weigh lambda, response targets 1,
and the loss is divided by the total weight. Exact label weights, the loss against a hand computation,
lambda = 0 / 1 being exactly masking on / off, and token-exact accumulation with weights."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import compose_train_config, train_in_process
from instructune.batch import IGNORE_INDEX, LOSS_TOKENS_IN_STEP, LOSS_WEIGHTS
from instructune.config_check import ConfigError, check_config
from instructune.data.collate import CausalCollator, PackedCausalCollator, loss_token_count
from instructune.data.sampler import ExampleBatch
from instructune.data.tokenize import TokenizedExample
from instructune.models.module import InstructionTuningModule

X, EOS = IGNORE_INDEX, 0


def _examples() -> list[TokenizedExample]:
    # prompt 5 6 7 | response 8 EOS, and prompt 9 10 | response EOS
    return [TokenizedExample([5, 6, 7, 8, EOS], 3), TokenizedExample([9, 10, EOS], 2)]


def test_prompt_targets_carry_the_weight_and_response_targets_one():
    batch = CausalCollator(pad_id=EOS, prompt_weight=0.25)(_examples())
    # targets are the next tokens: 6 7 (prompt) 8 EOS (response); 10 (prompt) EOS (response), then padding
    assert batch["labels"].tolist() == [[6, 7, 8, EOS], [10, EOS, X, X]]
    assert batch["response_labels"].tolist() == [[X, X, 8, EOS], [X, EOS, X, X]]
    assert batch[LOSS_WEIGHTS].tolist() == [[0.25, 0.25, 1.0, 1.0], [0.25, 1.0, 0.0, 0.0]]
    assert batch[LOSS_WEIGHTS].dtype == torch.float32
    assert [loss_token_count(e, True, prompt_weight=0.25) for e in _examples()] == [2.5, 1.25]


def test_packed_rows_carry_the_same_weights():
    examples = ExampleBatch(_examples())
    examples.row_sizes = [2]
    batch = PackedCausalCollator(pad_id=EOS, prompt_weight=0.5)(examples)
    assert batch["labels"].tolist() == [[6, 7, 8, EOS, 10, EOS]]
    assert batch[LOSS_WEIGHTS].tolist() == [[0.5, 0.5, 1.0, 1.0, 0.5, 1.0]]


@pytest.mark.parametrize("weight, masking", [(0.0, True), (1.0, False)])
def test_weights_zero_and_one_are_exactly_masking_on_and_off(weight, masking):
    weighted = CausalCollator(pad_id=EOS, prompt_weight=weight)(_examples())
    plain = CausalCollator(pad_id=EOS, masking=masking)(_examples())
    assert set(weighted) == set(plain) and LOSS_WEIGHTS not in weighted
    assert all(torch.equal(weighted[k], plain[k]) for k in plain)
    assert ([loss_token_count(e, not masking, prompt_weight=weight) for e in _examples()]
            == [loss_token_count(e, masking) for e in _examples()] == ([2, 1] if masking else [4, 2]))


def test_weighted_loss_against_a_hand_computation():
    batch = CausalCollator(pad_id=EOS, prompt_weight=0.1)(_examples())
    logits = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))
    loss, total = InstructionTuningModule.token_loss(logits, batch["labels"], batch[LOSS_WEIGHTS])
    # by hand: -log softmax of each target, times its weight, over the weights' sum (0.1+0.1+1+1 + 0.1+1)
    terms = []
    for row, targets, weights in ((0, [6, 7, 8, EOS], [0.1, 0.1, 1, 1]), (1, [10, EOS], [0.1, 1])):
        for j, (t, w) in enumerate(zip(targets, weights)):
            row_logits = logits[row, j].tolist()
            log_z = math.log(sum(math.exp(v) for v in row_logits))
            terms.append((w, log_z - row_logits[t]))
    expected = sum(w * nll for w, nll in terms) / sum(w for w, _ in terms)
    assert total.item() == pytest.approx(3.3, abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # the same logits under masking on / off: the plain token means over response / all targets
    masked, n_masked = InstructionTuningModule.token_loss(logits, CausalCollator(EOS, True)(_examples())["labels"])
    unmasked, n_all = InstructionTuningModule.token_loss(logits, CausalCollator(EOS, False)(_examples())["labels"])
    response = [nll for w, nll in terms if w == 1]
    assert (n_masked.item(), n_all.item()) == (3, 6)
    assert masked.item() == pytest.approx(sum(response) / 3, abs=1e-5)
    assert unmasked.item() == pytest.approx(sum(nll for _, nll in terms) / 6, abs=1e-5)


def test_accumulated_micro_batches_take_the_step_of_one_weighted_batch(tiny_dirs):
    """Each micro-batch divides by the whole window's weight (the sampler's count), so two micro-batches
    give exactly the gradient of one batch holding both examples."""
    from instructune.models.loading import load_model

    torch.manual_seed(0)
    module = InstructionTuningModule(load_model(str(tiny_dirs["gpt2"]), "causal").eval(), "causal")
    examples = _examples()
    window = sum(loss_token_count(e, True, prompt_weight=0.3) for e in examples)

    def grads(parts: list[list[TokenizedExample]]) -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        for part in parts:
            micro = ExampleBatch(part)
            micro.window_tokens = window
            batch = CausalCollator(pad_id=EOS, prompt_weight=0.3)(micro)
            assert batch[LOSS_TOKENS_IN_STEP] == pytest.approx(window) and isinstance(batch[LOSS_TOKENS_IN_STEP], float)
            module.training_step(batch, 0).backward()
        return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])

    assert torch.allclose(grads([examples]), grads([[examples[0]], [examples[1]]]), atol=1e-6)


def test_the_config_key_reaches_the_training_batches_and_is_checked():
    from instructune.train import build_parts

    parts = build_parts(compose_train_config("loss.prompt_weight=0.1", "data.source.max_train_records=32"))
    batch = next(iter(parts.data.train_dataloader()))
    weights, labels, response = batch[LOSS_WEIGHTS], batch["labels"], batch["response_labels"]
    prompt_targets = (labels != X) & (response == X)
    assert prompt_targets.any() and (weights[prompt_targets] == torch.tensor(0.1)).all()
    assert (weights[response != X] == 1).all() and (weights[labels == X] == 0).all()
    assert batch[LOSS_TOKENS_IN_STEP] == pytest.approx(weights.sum().item(), rel=1e-6)
    with pytest.raises(ConfigError, match=r"loss.prompt_weight=1.5: .*a number in \[0, 1\]"):
        check_config(compose_train_config("loss.prompt_weight=1.5"))


@pytest.mark.slow
def test_a_run_with_a_prompt_loss_weight(tmp_path):
    proc = train_in_process("loss.prompt_weight=0.1", "trainer.max_steps=8", "trainer.val_check_interval=8",
                            "data.source.max_train_records=64", "eval.max_examples=8", "eval.max_new_tokens=4",
                            "logger=none", "eval.base=false", "export=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 8
    assert (summary["config"]["prompt_weight"], summary["config"]["masking"]) == (0.1, False)
    # loss-bearing tokens: every target of every example (the prompt's too), as masking=false would count
    assert summary["throughput"]["loss_tokens"] > 0 and summary["metrics"]["train/loss"] > 0
