"""Preference tuning (``stage=dpo``): the loss against TRL's own ``DPOTrainer`` on the same batch, the exact
tensors of a preference batch, field detection and its errors, the adapter-disabled reference, and real
``python train.py stage=dpo init_from=<run>`` runs (LoRA and full) and a sweep with its report."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO, WORDS, make_word_tokenizer, train_in_process
from instructune.batch import IGNORE_INDEX
from instructune.data.preference_data import PreferenceCollator, PreferenceDataModule, tokenize_preferences
from instructune.data.preferences import PreferenceFields, PreferenceFileSource
from instructune.data.records import DataError
from instructune.data.tokenize import OverlengthError, TokenizedExample
from instructune.models.dpo import DPOModule, dpo_loss, sequence_logps

X = IGNORE_INDEX
TINY_SFT = ["logger=none", "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
            "data.source.max_train_records=32", "eval.base=false", "eval.max_examples=6", "eval.max_new_tokens=6",
            "eval.selection_split=null", "checkpoint=none"]
TINY_DPO = ["stage=dpo", "logger=none", "trainer.max_steps=3", "trainer.val_check_interval=3",
            "trainer.limit_val_batches=1", "data.source.max_train_records=48", "eval.max_examples=6",
            "eval.max_new_tokens=6", "eval.selection_split=null", "checkpoint=none"]


def _tiny_gpt2(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                      eos_token_id=0, bos_token_id=0, pad_token_id=0))


# ---------------------------------------------------------------- batches: exact ids, labels and masks

PROMPTS = ["q what", "what is the capital of france ?"]  # word ids: q=16 what=9; what is the capital of france ? =
CHOSEN = ["paris", "paris"]                              # 9 7 3 4 5 6 10; paris=8 hi=12 hello=13, EOS (= pad) 0
REJECTED = ["hi hello", "hi"]


def test_a_preference_batch_is_the_chosen_rows_then_the_rejected_rows_with_answer_labels():
    pairs, stats = tokenize_preferences(PROMPTS, CHOSEN, REJECTED, make_word_tokenizer(), max_seq_length=64)
    assert (stats.kept, stats.truncated, stats.dropped) == (2, 0, 0)
    assert [p.chosen for p in pairs] == [TokenizedExample([16, 9, 8, 0], 2),
                                         TokenizedExample([9, 7, 3, 4, 5, 6, 10, 8, 0], 7)]
    assert [p.rejected for p in pairs] == [TokenizedExample([16, 9, 12, 13, 0], 2),
                                           TokenizedExample([9, 7, 3, 4, 5, 6, 10, 12, 0], 7)]
    batch = PreferenceCollator(pad_id=0)(pairs)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "response_labels"}
    assert batch["input_ids"].tolist() == [[16, 9, 8, 0, 0, 0, 0, 0],  # chosen 0 (its EOS, then padding)
                                           [9, 7, 3, 4, 5, 6, 10, 8],  # chosen 1
                                           [16, 9, 12, 13, 0, 0, 0, 0],  # rejected 0
                                           [9, 7, 3, 4, 5, 6, 10, 12]]  # rejected 1
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8, [1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    # the target of position j is token j+1; only answer tokens (EOS included) carry one
    assert batch["labels"].tolist() == [[X, 8, 0, X, X, X, X, X], [X, X, X, X, X, X, 8, 0],
                                        [X, 12, 13, 0, X, X, X, X], [X, X, X, X, X, X, 12, 0]]
    assert torch.equal(batch["response_labels"], batch["labels"])


def test_pairs_over_max_seq_length_are_cut_dropped_or_refused_together():
    tok = make_word_tokenizer()
    pairs, stats = tokenize_preferences(PROMPTS, CHOSEN, REJECTED, tok, max_seq_length=4)
    # pair 1's prompt (7 tokens) fills the window: dropped; pair 0's rejected side (5) loses its EOS, chosen fits
    assert (stats.kept, stats.truncated, stats.dropped) == (1, 1, 1)
    assert (pairs[0].chosen.input_ids, pairs[0].rejected.input_ids) == ([16, 9, 8, 0], [16, 9, 12, 13])
    assert tokenize_preferences(PROMPTS, CHOSEN, REJECTED, tok, 4, "drop")[1].dropped == 2
    with pytest.raises(OverlengthError, match="record 0 is 5 tokens long, over max_seq_length=4"):
        tokenize_preferences(PROMPTS, CHOSEN, REJECTED, tok, 4, "error")


def test_sequence_log_probs_sum_the_answer_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, len(WORDS))
    labels = torch.tensor([[X, 8, 0, X], [X, X, X, 12]])
    logp = torch.log_softmax(logits, -1)
    expected = [logp[0, 1, 8] + logp[0, 2, 0], logp[1, 3, 12]]
    assert torch.allclose(sequence_logps(logits, labels), torch.stack(expected), atol=1e-6)


# ---------------------------------------------------------------- the loss: TRL's DPOTrainer on the same batch

@pytest.mark.parametrize("loss_type,beta,smoothing,sft", [("sigmoid", 0.1, 0.0, 0.0), ("sigmoid", 0.7, 0.0, 0.0),
                                                          ("hinge", 0.5, 0.0, 0.0), ("robust", 0.3, 0.2, 0.0),
                                                          ("sigmoid", 0.2, 0.0, 0.6)])
def test_the_loss_and_reward_statistics_equal_trls_on_the_same_batch(tmp_path, loss_type, beta, smoothing, sft):
    """TRL's own ``DPOTrainer._compute_loss`` (trl 1.16 has no separate ``dpo_loss``) with its own collator
    on the same token ids, policy and reference: the loss to 1e-6, and its logged reward statistics."""
    pytest.importorskip("trl", reason="trl is the reference implementation (a test-only dependency)")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    policy, reference = _tiny_gpt2(1), _tiny_gpt2(2)  # different weights: a loss far from log 2
    ours = DPOModule(copy.deepcopy(policy), copy.deepcopy(reference), beta, loss_type, smoothing, sft_weight=sft)
    tok = make_word_tokenizer()
    prompts, chosen, rejected = PROMPTS + ["say hi"], CHOSEN + ["hello"], REJECTED + ["the x y z"]
    pairs, _ = tokenize_preferences(prompts, chosen, rejected, tok, 64)
    trl_batch = DataCollatorForPreference(pad_token_id=0)([
        {"prompt_ids": p.chosen.input_ids[: p.chosen.prompt_length],
         "chosen_ids": p.chosen.input_ids[p.chosen.prompt_length:],
         "rejected_ids": p.rejected.input_ids[p.rejected.prompt_length:]} for p in pairs])
    losses = {"loss_type": [loss_type, "sft"], "loss_weights": [1.0, sft]} if sft else {"loss_type": [loss_type]}
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, **losses, label_smoothing=smoothing,
                     report_to="none", use_cpu=True, bf16=False)  # float32, as ours (trl defaults to bf16 autocast)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "x"}]))
    trainer.model.train()
    expected = trainer._compute_loss(trainer.model, trl_batch, return_outputs=False)

    ours.train()
    scores = ours.score(PreferenceCollator(pad_id=0)(pairs))
    terms = scores.terms
    assert abs(scores.loss.item() - expected.item()) < 1e-6
    assert abs(expected.item() - math.log(2)) > 1e-3  # a batch where the two models disagree
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert (terms.chosen_rewards > terms.rejected_rewards).float().mean().item() == logged["rewards/accuracies"]
    for ours_value, key in ((terms.chosen_rewards - terms.rejected_rewards, "rewards/margins"),
                            (terms.chosen_rewards, "rewards/chosen"), (terms.rejected_rewards, "rewards/rejected")):
        assert ours_value.mean().item() == pytest.approx(logged[key], abs=1e-6)


def test_the_loss_by_hand():
    """Two pairs, numbers worked out independently: delta = (pc - rc) - (pr - rr)."""
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0], [-2.0, -2.0]))
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)  # deltas 2 and -1
    assert torch.allclose(out.losses, torch.tensor([math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(0.5))]))
    assert out.chosen_rewards.tolist() == [0.5, 0.0] and out.rejected_rewards.tolist() == [-0.5, 0.5]
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, 0.5, "hinge").losses, torch.tensor([0.0, 1.5]))


# ---------------------------------------------------------------- preference files: fields detected, errors named

BOOK = [{"instruction": f"Rewrite word {i}.", "input": f"w{i}", "output": f"plain {i}", "rejected": f"rude {i}",
         "chosen": f"polite {i}"} for i in range(40)]  # the LLMs-from-scratch preference-tuning chapter's layout


def _file(tmp_path, rows, name="prefs.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_an_alpaca_preference_file_answers_with_chosen_and_keeps_rejected(tmp_path):
    splits = PreferenceFileSource(_file(tmp_path, BOOK), seed=3).load()
    assert {k: len(v) for k, v in splits.items()} == {"train": 34, "validation": 4, "test": 2}  # 85/10/5 of 40
    by_instruction = {r["instruction"]: r for split in splits.values() for r in split}
    assert len(by_instruction) == 40
    assert by_instruction["Rewrite word 7."] == {"instruction": "Rewrite word 7.", "input": "w7", "output": "polite 7",
                                                 "rejected": "rude 7"}


def test_prompt_files_and_named_fields(tmp_path):
    rows = [{"prompt": f"say {i}", "chosen": f"yes {i}", "rejected": f"no {i}", "input": "ignored"} for i in range(40)]
    split = PreferenceFileSource(_file(tmp_path, rows, "p.jsonl"), max_train_records=5).load()
    assert len(split["train"]) == 5
    assert all(r["instruction"].startswith("say ") and r["input"] == "" for r in split["train"])
    named = [{"question": f"q{i}", "context": f"c{i}", "good": f"g{i}", "bad": f"b{i}"} for i in range(40)]
    fields = PreferenceFields(prompt="question", input="context", chosen="good", rejected="bad")
    records = [r for s in PreferenceFileSource(_file(tmp_path, named), fields).load().values() for r in s]
    assert {"instruction": "q4", "input": "c4", "output": "g4", "rejected": "b4"} in records


ERRORS = {  # rows, fields, the error after "<file>: "
    "no rejected column": ([{k: v for k, v in r.items() if k != "rejected"} for r in BOOK], PreferenceFields(),
                           "no 'rejected' field (the rejected answer; columns: chosen, input, instruction, output): "
                           "preference pairs need a chosen and a rejected answer per record; name the column with "
                           "dpo.fields.rejected=<column>"),
    "a named column that is not there": (BOOK, PreferenceFields(chosen="preferred"),
                                         "no 'preferred' field (the chosen answer; columns: chosen, input, instruction, "
                                         "output, rejected)"),
    "no prompt column": ([{"text": "a", "chosen": "b", "rejected": "c"}] * 40, PreferenceFields(),
                         "no prompt field: expected 'prompt' or 'instruction' (columns: chosen, rejected, text); name it "
                         "with dpo.fields.prompt=<column>"),
    "a prompt mapping to nothing": (BOOK, PreferenceFields(prompt="question"),
                                    "field mapping prompt='question' names a column the data does not have"),
    "null rejected": ([*BOOK[:3], {**BOOK[3], "rejected": None}, *BOOK[4:]], PreferenceFields(),
                      "record 3: field 'rejected' is missing or null"),
    "missing chosen": ([*BOOK[:5], {k: v for k, v in BOOK[5].items() if k != "chosen"}, *BOOK[6:]], PreferenceFields(),
                       "record 5: field 'chosen' is missing or null"),
    "empty chosen": ([*BOOK[:2], {**BOOK[2], "chosen": "  "}, *BOOK[3:]], PreferenceFields(),
                     "record 2: field 'chosen' is empty"),
    "a number": ([{**BOOK[0], "rejected": 5}, *BOOK[1:]], PreferenceFields(),
                 "record 0: field 'rejected' must be a string, got int 5"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_preference_file_errors_name_the_file_the_record_and_the_field(tmp_path, case):
    rows, fields, expected = ERRORS[case]
    path = _file(tmp_path, rows)
    with pytest.raises(DataError) as e:
        PreferenceFileSource(path, fields).load()
    assert str(e.value).startswith(f"{path}: {expected}")


def test_records_without_rejected_answers_are_refused_by_the_data_module():
    from instructune.data.prompts import make_prompt_style

    class Instructions:  # a source of plain instruction records
        name = "plain"

        def load(self):
            return {"train": [{"instruction": "say hi", "input": "", "output": "hello", "rejected": "go"},
                              {"instruction": "say hi", "input": "", "output": "hello"}]}

    data = PreferenceDataModule(Instructions(), make_word_tokenizer(), make_prompt_style("alpaca"))
    with pytest.raises(DataError, match=r"^plain \[train split\]: record 1 has no rejected answer; preference"):
        data.setup("fit")


# ---------------------------------------------------------------- the world's preference pairs

def test_world_pairs_reject_another_answer_of_the_same_family():
    import random

    from instructune.world.preferences import WorldPreferenceSource, with_rejected
    from instructune.world.source import WorldSource

    capitals = [{"instruction": f"capital {i}", "input": "", "output": o, "task": "capital"}
                for i, o in enumerate(["Paris", "Rome", "Pisa", "Oslo"])]
    lonely = [{"instruction": "say yes", "input": "", "output": "yes", "task": "yes"}]
    out = with_rejected(capitals + lonely, random.Random(0), candidates=200)  # 200 draws: every candidate seen
    assert [r["rejected"] for r in out[:3:2]] == ["Pisa", "Paris"]  # the longest shared start among the family's
    assert out[1]["rejected"] in {"Paris", "Pisa", "Oslo"} and out[4]["rejected"] != "yes"  # a lone family borrows
    assert [{k: v for k, v in r.items() if k != "rejected"} for r in out] == capitals + lonely

    world, pairs = WorldSource().load(), WorldPreferenceSource().load()
    assert pairs == WorldPreferenceSource().load()  # deterministic
    answers = {(r["task"], r["output"]) for records in world.values() for r in records}
    for split, records in pairs.items():
        assert [{k: v for k, v in r.items() if k != "rejected"} for r in records] == world[split]
        assert all(r["rejected"] != r["output"] and (r["task"], r["rejected"]) in answers for r in records)
        same_split = {(r["task"], r["output"]) for r in records}  # almost always from the same split
        assert sum((r["task"], r["rejected"]) not in same_split for r in records) <= 0.01 * len(records)


# ---------------------------------------------------------------- the start and the reference

@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A tiny finished LoRA instruction-tuning run on the world: what init_from points at."""
    run = tmp_path_factory.mktemp("sft-run")
    assert train_in_process(*TINY_SFT, f"hydra.run.dir={run}").returncode == 0
    return run


def _start_batch(tuned, n: int = 4):
    """The first ``n`` world test pairs, formatted with the run's prompt style, as one preference batch."""
    from instructune.world.preferences import WorldPreferenceSource

    records = WorldPreferenceSource().load()["test"][:n]
    prompts = [tuned.prompt_style.format(r["instruction"], r["input"], tuned.tokenizer) for r in records]
    pairs, _ = tokenize_preferences(prompts, [r["output"] for r in records], [r["rejected"] for r in records],
                                    tuned.tokenizer, 256)
    return PreferenceCollator(tuned.tokenizer.pad_token_id)(pairs)


def _sft_logps(run, batch):
    from instructune.run_folder import load_tuned

    with torch.no_grad():
        model = load_tuned(run).model
        return sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                              batch["labels"])


def _one_step(module, batch):
    module.score(batch).loss.backward()
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    module.zero_grad()


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_the_reference_is_the_instruction_tuned_model_and_lora_keeps_one_copy(sft_run, strategy):
    from transformers import GPT2LMHeadModel

    from instructune.dpo_start import load_start, policy_and_reference
    from instructune.models.strategies import Full, LoRA
    from instructune.run_folder import load_tuned
    from instructune.world.source import WORLD_GPT2

    batch = _start_batch(load_tuned(sft_run))
    expected = _sft_logps(sft_run, batch)  # the SFT run as it generates (base + its own adapter, unmerged)
    policy, reference = policy_and_reference(load_start(str(sft_run)), LoRA(lr=1e-2) if strategy == "lora" else Full())
    module = DPOModule(policy, reference, beta=0.1)
    copies = sum(isinstance(m, GPT2LMHeadModel) for m in module.modules())
    assert (reference is None, copies) == ((True, 1) if strategy == "lora" else (False, 2))
    if strategy == "lora":  # every parameter of the world GPT-2 once, and the adapter's
        base = GPT2LMHeadModel.from_pretrained(WORLD_GPT2)
        assert sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n) == base.num_parameters()
    module.train()
    torch.testing.assert_close(module.reference_logps(batch), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(module.policy_logps(batch).detach(), expected, atol=1e-5, rtol=1e-6)  # step 0: the start
    assert module.score(batch).loss.item() == pytest.approx(math.log(2), abs=1e-6)
    _one_step(module, batch)
    assert (module.policy_logps(batch).detach() - expected).abs().max() > 1e-3  # the policy moved ...
    torch.testing.assert_close(module.reference_logps(batch), expected, atol=1e-5, rtol=1e-6)  # ... the reference did not
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("reference.") for k in checkpoint["state_dict"])
    assert {k.startswith("model.") for k in checkpoint["state_dict"]} == {True}


# ---------------------------------------------------------------- python train.py stage=dpo, as a user runs it

@pytest.fixture(scope="module")
def dpo_runs(sft_run, tmp_path_factory):
    runs = {}
    for strategy in ("lora", "full"):
        runs[strategy] = tmp_path_factory.mktemp(f"dpo-{strategy}")
        proc = train_in_process(*TINY_DPO, f"peft={strategy}", f"init_from={sft_run}", f"hydra.run.dir={runs[strategy]}")
        assert proc.returncode == 0
    return runs


def _predictions(run):
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_a_dpo_run_scores_its_start_and_itself_and_exports_a_loadable_model(sft_run, dpo_runs, strategy):
    from instructune.eval.generate import generate
    from instructune.run_folder import load_tuned, resolve_base
    from instructune.world.source import WorldSource

    run = dpo_runs[strategy]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 3
    assert summary["lr"] == pytest.approx({"lora": 1e-3, "full": 1e-4}[strategy])  # conf/stage/dpo.yaml: SFT's / 10
    assert {k: summary["config"][k] for k in ("stage", "peft", "init_from", "prompt_style")} == {
        "stage": "dpo", "peft": strategy, "init_from": str(sft_run / "model"), "prompt_style": "alpaca"}
    world = WorldSource().load()
    assert summary["data"] == {"train": 48, "validation": len(world["validation"]), "test": len(world["test"])}
    dpo = summary["dpo"]
    assert dpo["reference"] == ("the start, adapter disabled" if strategy == "lora" else "the start, frozen copy")
    before, after = dpo["before"], dpo["after"]
    assert before["n"] == after["n"] == 6
    # before any step the policy is the start: loss log 2, no reward; the log-prob margin is the SFT model's own
    assert (before["loss"], before["reward_accuracy"], before["reward_margin"]) == (
        pytest.approx(math.log(2), abs=1e-5), 0.0, pytest.approx(0.0, abs=1e-5))
    logps = _sft_logps(sft_run, _start_batch(load_tuned(sft_run), 6))
    assert before["logp_margin"] == pytest.approx((logps[:6] - logps[6:]).mean().item(), abs=1e-4)
    assert after["loss"] != before["loss"] and 0 <= after["reward_accuracy"] <= 1
    assert {"train/loss", "train/reward_accuracy", "train/logp_margin", "val/loss", "val/reward_margin"} <= set(
        summary["metrics"])
    # eval.base is the start: the same test items as the SFT run, answered as the SFT run answered them
    assert summary["eval"]["base"]["n"] == summary["eval"]["tuned"]["n"] == 6
    assert [p["base"] for p in _predictions(run)] == [p["tuned"] for p in _predictions(sft_run)]
    # the exported model loads like any run and answers as the run's own tuned evaluation did
    meta = json.loads((run / "model" / "instructune.json").read_text())
    assert (meta["peft"], meta["adapter_only"], meta["stage"]) == (strategy, strategy == "lora", "dpo")
    assert (meta["format"], meta["stop"]) == ("instructions", [])  # the start's, for instructune generate
    base = resolve_base(meta["base_model"], run / "model")  # lora: the merged start; full: the start it came from
    assert base == str((run / "sft_merged" if strategy == "lora" else sft_run / "model").resolve())
    tuned = load_tuned(run)
    first = _predictions(run)[:2]
    prompts = [tuned.prompt_style.format(p["instruction"], p["input"], tuned.tokenizer) for p in first]
    assert generate(tuned.model, tuned.tokenizer, prompts, max_new_tokens=6) == [p["tuned"] for p in first]


def test_dpo_settings_are_checked_before_anything_loads(tmp_path, capsys, sft_run):
    cases = [
        (["stage=dpo"], "error: stage=dpo needs init_from=<run folder>: a finished instruction-tuning run"),
        ([f"init_from={sft_run}"], f"error: init_from={sft_run}: read by stage=dpo only"),
        (["stage=dpo", f"init_from={tmp_path}"], f"error: {tmp_path}: no instructune.json here or in {tmp_path}/model"),
        (["stage=dpo", f"init_from={sft_run}", "dpo.loss_type=ipo"],
         "error: dpo.loss_type='ipo': must be one of sigmoid, hinge, robust"),
        (["stage=dpo", f"init_from={sft_run}", "dpo.label_smoothing=0.1"],
         "error: dpo.label_smoothing=0.1 with dpo.loss_type=sigmoid: label smoothing"),
        (["stage=dpo", f"init_from={sft_run}", "dpo.beta=0"], "error: dpo.beta=0.0: must be > 0"),
        (["stage=dpo", f"init_from={sft_run}", "dpo.sft_weight=-1"], "error: dpo.sft_weight=-1.0: must be >= 0"),
        (["stage=dpo", f"init_from={sft_run}", "data.packing=true"], "error: data.packing=true with stage=dpo"),
        (["stage=dpo", f"init_from={sft_run}", "data.balance=task"],
         "error: data.mixture / data.balance / data.mix_with with stage=dpo"),
    ]
    for overrides, expected in cases:
        proc = train_in_process(*overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(expected), errors
    proc = train_in_process("stage=rlhf", f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)  # no such stage
    assert proc.returncode == 1 and "Could not find 'stage/rlhf'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_preference_file_is_one_line(tmp_path, capsys, sft_run):
    path = _file(tmp_path, [{k: v for k, v in r.items() if k != "rejected"} for r in BOOK])
    proc = train_in_process("stage=dpo", f"init_from={sft_run}", "data=json", f"data.path={path}", "logger=none",
                            f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"error: {path}: no 'rejected' field (the rejected answer; " in proc.stderr


@pytest.mark.slow
def test_a_dpo_sweep_over_lora_and_full_and_its_report(sft_run, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "train.py", "-m", *TINY_DPO, "peft=lora,full", f"init_from={sft_run}",
                           f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in sweep.iterdir() if p.is_dir()}
    assert {s["config"]["peft"] for s in summaries.values()} == {"lora", "full"}
    assert {s["status"] for s in summaries.values()} == {"ok"}
    for s in summaries.values():  # the pairs get the train/eval overlap audit too (the world's: none)
        assert (s["overlap"]["test"]["contaminated"], s["overlap"]["decontaminated"]) == (0, 0)
    report = subprocess.run([sys.executable, "-m", "instructune.cli", "report", str(sweep)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    text = (sweep / "report.md").read_text()
    for job in summaries.values():  # one row per strategy, its tuned and base (the start's) exact match
        row = next(line for line in text.splitlines() if line.startswith(f"| `peft={job['config']['peft']}` |"))
        assert f"{100 * job['eval']['tuned']['all']:.1f}%" in row and f"{100 * job['eval']['base']['all']:.1f}%" in row
    # the preference section: each strategy's margin and ranking at its start and after DPO (one seed: no interval)
    assert "## Preference pairs (stage=dpo)" in text
    section = text.split("## Preference pairs (stage=dpo)")[1].split("\n## ")[0]
    for job in summaries.values():
        before, after = job["dpo"]["before"], job["dpo"]["after"]
        row = next(line for line in section.splitlines() if line.startswith(f"| `peft={job['config']['peft']}` |"))
        values = [c.strip() for c in row.split("|")[1:-1]]
        assert values[1] == "1" and values[2].endswith(")") and " pp (" in values[2]  # EM, DPO − start
        assert values[3:7] == [f"{before['logp_margin']:.3f}", f"{after['logp_margin']:.3f}",
                               f"{before['logp_accuracy']:.3f}", f"{after['logp_accuracy']:.3f}"]
        gain = 100 * (job["eval"]["tuned"]["all"] - job["eval"]["base"]["all"])
        assert values[2].startswith(f"{gain:+.1f} pp")
