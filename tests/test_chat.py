"""Conversations (``data.format=messages``): chat records into one normal form, token-exact labels on every
assistant turn and its end-of-turn marker (the world template's and the built-in one), the prompt-loss weight
on the other tokens, ShareGPT mapping, one-line errors, generation that stops at the end-of-turn marker, the
world's multi-turn episodes, and real ``python train.py`` runs on a chat file and on the world."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from conftest import compose_train_config, train_in_process
from instructune.batch import IGNORE_INDEX, LOSS_WEIGHTS
from instructune.data.collate import CausalCollator, PackedCausalCollator, loss_token_count
from instructune.data.conversations import (BUILTIN_TEMPLATE, ChatFormat, MessageFields, tokenize_conversations,
                                            validate_conversations)
from instructune.data.datamodule import InstructionDataModule
from instructune.data.records import DataError, DatasetSource
from instructune.data.sampler import ExampleBatch
from instructune.data.tokenize import OverlengthError, token_lengths
from instructune.data.tokenizer_loading import load_tokenizer
from instructune.eval.generate import generate
from instructune.eval.split_evaluation import SplitEvaluation
from instructune.world.families import OUTERS
from instructune.world.source import WORLD_GPT2, WORLD_T5, WorldSource

X = IGNORE_INDEX
CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris"},
                {"role": "user", "content": "Now write it in capital letters."},
                {"role": "assistant", "content": "PARIS"}]
# the world template (<|role|>\n content <|end|>\n), written out piece by piece: (text, is an assistant turn);
# the line break after an answer's end-of-turn marker is template text, not the assistant's
WORLD_PIECES = [("<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n", False),
                ("Paris<|end|>", True),
                ("\n<|user|>\nNow write it in capital letters.<|end|>\n<|assistant|>\n", False),
                ("PARIS<|end|>", True),
                ("\n", False)]
BUILTIN_PIECES = [("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                   + "<|im_start|>assistant\n", False),
                  ("Paris<|im_end|>", True),
                  ("\n<|im_start|>user\nNow write it in capital letters.<|im_end|>\n<|im_start|>assistant\n", False),
                  ("PARIS<|im_end|>", True),
                  ("\n", False)]
# the assistant turns' ids in the world vocabulary: " Paris" "<|" "end" "|>" and " P" "AR" "I" "S" "<|" "end" "|>"
WORLD_ANSWER_IDS = ([1394, 493, 486, 494], [583, 1056, 41, 51, 493, 486, 494])
BUILTIN_ANSWER_IDS = ([1394, 493, 758, 63, 486, 494], [583, 1056, 41, 51, 493, 758, 63, 486, 494])


def world_tokenizer(template: bool = True):
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    if not template:
        tokenizer.chat_template = None  # a base without a chat template
    return tokenizer


def _pieces_ids(tokenizer, pieces):
    """Each piece tokenised on its own: the ids and the is-assistant mask, independently of the module."""
    ids, mask = [], []
    for text, is_assistant in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [int(is_assistant)] * len(piece)
    return ids, mask


@pytest.mark.parametrize("template, pieces, answers, marker", [
    (True, WORLD_PIECES, WORLD_ANSWER_IDS, "<|end|>"),
    (False, BUILTIN_PIECES, BUILTIN_ANSWER_IDS, "<|im_end|>"),
], ids=["world-template", "builtin-template"])
def test_every_assistant_turn_and_its_end_of_turn_marker_and_nothing_else_carries_labels(template, pieces, answers,
                                                                                         marker):
    tokenizer = world_tokenizer(template)
    chat = ChatFormat(tokenizer)
    assert chat.pieces(CONVERSATION) == pieces and chat.end_of_turn == marker
    if not template:  # the built-in template is installed on the tokenizer, so it is exported with the model
        assert tokenizer.chat_template == BUILTIN_TEMPLATE
    [example], stats = tokenize_conversations([CONVERSATION], chat, max_seq_length=256)
    ids, mask = _pieces_ids(tokenizer, pieces)
    assert (example.input_ids, example.assistant_mask) == (ids, mask) and stats.kept == 1
    # the world tokenizer splits at line breaks first: pieces tokenise exactly as the whole text does
    assert ids == tokenizer("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]
    first = len(tokenizer(pieces[0][0], add_special_tokens=False)["input_ids"])
    between = len(tokenizer(pieces[2][0], add_special_tokens=False)["input_ids"])
    batch = CausalCollator(pad_id=0, masking=True)([example])
    # target j is token j+1: no label until the first answer token, then the answer with its marker, none on
    # the line break and the follow-up, then the second answer with its marker, none on the last line break
    expected = [X] * (first - 1) + answers[0] + [X] * between + answers[1] + [X]
    assert batch["labels"][0].tolist() == batch["response_labels"][0].tolist() == expected
    labelled = [tokenizer.decode(a) for a in answers]
    assert [t.strip() for t in labelled] == [f"Paris{marker}", f"PARIS{marker}"]
    assert loss_token_count(example, masking=True) == len(answers[0]) + len(answers[1])
    assert token_lengths([example]) == {"prompt_mean": first + between + 1, "response_mean": 11 if template else 15,
                                        "ratio": round((first + between + 1) / (11 if template else 15), 3)}


def test_masking_off_and_a_prompt_weight_cover_the_other_turns_and_padding_stays_ignored():
    chat = ChatFormat(world_tokenizer())
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Paris"}]
    examples, _ = tokenize_conversations([CONVERSATION, short], chat, 256)
    long_ids, long_mask = examples[0].input_ids, examples[0].assistant_mask
    short_ids, short_mask = examples[1].input_ids, examples[1].assistant_mask
    width = len(long_ids) - 1
    pad = width - (len(short_ids) - 1)
    unmasked = CausalCollator(pad_id=0, masking=False)(examples)
    assert unmasked["labels"].tolist() == [long_ids[1:], short_ids[1:] + [X] * pad]
    assistant_only = [[t if m else X for t, m in zip(ids[1:], mask[1:], strict=True)] + [X] * p
                      for ids, mask, p in ((long_ids, long_mask, 0), (short_ids, short_mask, pad))]
    assert unmasked["response_labels"].tolist() == assistant_only  # validation loss: assistant tokens only
    assert LOSS_WEIGHTS not in unmasked
    weighted = CausalCollator(pad_id=0, prompt_weight=0.1)(examples)
    assert weighted["labels"].tolist() == unmasked["labels"].tolist()
    expected = [[1.0 if m else 0.1 for m in mask[1:]] + [0.0] * p
                for mask, p in ((long_mask, 0), (short_mask, pad))]
    assert torch.equal(weighted[LOSS_WEIGHTS], torch.tensor(expected))
    # the sampler's count of each example's loss weight is what the collated weights sum to
    for row, example in enumerate(examples):
        assert loss_token_count(example, True, prompt_weight=0.1) == pytest.approx(float(weighted[LOSS_WEIGHTS][row].sum()))
        assert loss_token_count(example, False) == len(example.input_ids) - 1
    packed_examples = ExampleBatch(examples)
    packed_examples.row_sizes = [2]
    packed = PackedCausalCollator(pad_id=0, prompt_weight=0.1)(packed_examples)
    assert packed["labels"][0].tolist() == long_ids[1:] + short_ids[1:]
    assert torch.equal(packed[LOSS_WEIGHTS][0], torch.tensor(expected[0] + expected[1][: len(short_ids) - 1]))


def test_sharegpt_and_renamed_fields_map_to_the_normal_form():
    sharegpt = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"},
                                   {"from": "gpt", "value": "Goodbye"}], "id": "a"}]
    [record] = validate_conversations(sharegpt, MessageFields(), "chats.json")
    assert record == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                                   {"role": "assistant", "content": "Goodbye"}],
                      "instruction": "Bye", "input": "", "output": "Goodbye"}
    renamed = [{"dialog": [{"speaker": "me", "text": "Hi"}, {"speaker": "bot", "text": "Hello"}], "kind": "greet"}]
    fields = MessageFields(field="dialog", role="speaker", content="text", roles={"me": "user", "bot": "assistant"},
                           task="kind")
    assert validate_conversations(renamed, fields, "x") == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "instruction": "Hi", "input": "", "output": "Hello", "task": "greet"}]


GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


@pytest.mark.parametrize("bad, message", [
    ({"text": "hi"}, "record 1: field 'messages' is missing or null"),
    ({"messages": "user: hi"}, ("record 1: field 'messages' must be a list of turns, got str; a CSV cell holds text "
                                "only: store conversations as JSON or JSON Lines")),
    ({"messages": []}, "record 1: field 'messages' is empty"),
    ({"messages": ["hi"]}, "record 1: messages[0]: a turn must be an object with a role and a content, got str"),
    ({"messages": [{"content": "hi"}]}, "record 1: messages[0]: field 'role' is missing or null"),
    ({"messages": [{"role": "bot", "content": "hi"}]},
     ("record 1: messages[0]: unknown role 'bot' (known: assistant, gpt, human, system, user); map it with "
      "data.source.messages.roles={<name>:system|user|assistant}")),
    ({"messages": [{"role": "user", "content": "  "}]}, "record 1: messages[0]: field 'content' is empty"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
     "record 1: messages[0]: field 'content' must be a string, got list"),
    ({"messages": [{"role": "user", "content": "hi"}]},
     ("record 1: field 'messages' ends with a user turn; a conversation must end with the assistant's turn (the "
      "answer that is trained on and scored)")),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "be"},
                   {"role": "assistant", "content": "ok"}]}, "record 1: messages[1]: a system turn may only come first"),
    ({"messages": [{"role": "system", "content": "be"}, {"role": "assistant", "content": "ok"}]},
     "record 1: field 'messages' has no user turn"),
])
def test_bad_conversations_name_the_file_record_turn_and_field(tmp_path, bad, message):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [GOOD, bad, *[GOOD] * 30]))
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: {message}')}$"):
        DatasetSource(str(path), format="messages").load()
    # skip_invalid drops it and keeps the rest
    splits = DatasetSource(str(path), format="messages", skip_invalid=True).load()
    assert sum(map(len, splits.values())) == 31


def test_data_without_turns_and_bad_settings_are_one_line_errors(tmp_path, word_tokenizer):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 20))
    with pytest.raises(DataError, match=re.escape(f"{path}: data.format=messages reads chat records with a 'messages' "
                                                  "field (or ShareGPT's 'conversations'), and the data has instruction, "
                                                  "output; name the column with data.source.messages.field=<column>")):
        DatasetSource(str(path), format="messages").load()
    with pytest.raises(DataError, match=r"^data.format must be one of instructions, messages, got 'chat'$"):
        DatasetSource(str(path), format="chat").load()
    with pytest.raises(DataError, match=r"^data.source.messages.roles: 'bot' maps to 'model'; map a role name to "
                                        r"system, user, assistant$"):
        validate_conversations([GOOD], MessageFields(roles={"bot": "model"}), "x")
    with pytest.raises(DataError, match=r"^data.format must be one of instructions, messages, got 'chat'$"):
        InstructionDataModule(DatasetSource(str(path)), world_tokenizer(), format="chat")
    # a template that closes no turn: a tuned model could never learn to stop
    word_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(DataError, match="no end-of-turn marker"):
        InstructionDataModule(DatasetSource(str(path)), word_tokenizer, format="messages")
    with pytest.raises(DataError, match=r"data.chat_template='nope.jinja': no such file"):
        ChatFormat(world_tokenizer(), "nope.jinja")


def test_a_template_that_rewrites_earlier_turns_or_refuses_a_record_is_named():
    tokenizer = world_tokenizer()
    counted = "{{ messages | length }}" + tokenizer.chat_template  # the turn count up front changes every prefix
    with pytest.raises(DataError, match=r"^chats \[train split\]: record 0: turn 1: the chat template does not render "
                                        r"the conversation before this assistant turn as the start"):
        tokenize_conversations([CONVERSATION[1:3]], ChatFormat(load_tokenizer(str(WORLD_GPT2)), counted), 256,
                               where="chats [train split]")
    strict = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
              + tokenizer.chat_template)
    with pytest.raises(DataError, match=r"^x: record 1: the chat template refused it: no system turns$"):
        tokenize_conversations([CONVERSATION[1:3], CONVERSATION], ChatFormat(tokenizer, strict), 256, where="x")


def test_a_seam_that_tokenises_differently_keeps_each_answer_exactly_after_its_prompt(word_tokenizer, caplog):
    # "a :" then the answer with no space: as one text "a :hello" is one (unknown) word
    word_tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}q : {{ m['content'] }} "
                                    "{% else %}a :{{ m['content'] }} <eos> {% endif %}{% endfor %}"
                                    "{% if add_generation_prompt %}a :{% endif %}")
    chat = ChatFormat(word_tokenizer)
    assert chat.end_of_turn == "<eos>"
    conversation = [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hello"}]
    with caplog.at_level(logging.WARNING):
        [example], _ = tokenize_conversations([conversation], chat, 64, where="w")
    # q : say hi a : | hello <eos>: the answer's label is hello and the end-of-turn <eos>, after the prompt's ids
    assert example.input_ids == [16, 15, 11, 12, 17, 15, 13, 0] and example.assistant_mask == [0] * 6 + [1, 1]
    assert word_tokenizer(chat.prompt(conversation[:1]), add_special_tokens=False)["input_ids"] == [16, 15, 11, 12, 17, 15]
    assert "w: 1 of 1 conversation(s) tokenise differently at a turn boundary" in caplog.text


def test_a_bos_the_tokenizer_adds_is_written_once_whether_or_not_the_template_writes_it(word_tokenizer):
    from tokenizers import processors

    word_tokenizer.add_special_tokens({"bos_token": "<s>"})  # id 21, added in front as Llama's tokenizer does
    word_tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", word_tokenizer.bos_token_id)])
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}q : {% else %}a : {% endif %}{{ m['content'] }} "
                "<eos> {% endfor %}{% if add_generation_prompt %}a :{% endif %}")
    conversation = [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hello"}]
    for own in (template, "{{ bos_token }}" + template):
        chat = ChatFormat(word_tokenizer, own)
        [example], _ = tokenize_conversations([conversation], chat, 64)
        assert example.input_ids == [21, 16, 15, 11, 12, 0, 17, 15, 13, 0] and example.assistant_mask == [0] * 8 + [1, 1]
        assert word_tokenizer(chat.prompt(conversation[:1]), add_special_tokens=False)["input_ids"] == example.input_ids[:8]


def test_overlength_conversations_follow_the_policy():
    chat = ChatFormat(world_tokenizer())
    ids, mask = _pieces_ids(chat.tokenizer, WORLD_PIECES)
    first_answer_end = mask.index(1) + 5
    [cut], stats = tokenize_conversations([CONVERSATION], chat, first_answer_end + 3)
    assert (cut.input_ids, cut.assistant_mask) == (ids[: first_answer_end + 3], mask[: first_answer_end + 3])
    assert (stats.kept, stats.truncated) == (1, 1)
    # a window that ends before the first answer leaves nothing to learn: dropped
    assert tokenize_conversations([CONVERSATION], chat, mask.index(1))[1].dropped_empty_response == 1
    assert tokenize_conversations([CONVERSATION], chat, 20, "drop")[1].dropped_overlength == 1
    with pytest.raises(OverlengthError, match=f"record 0 is {len(ids)} tokens long, over max_seq_length=20"):
        tokenize_conversations([CONVERSATION], chat, 20, "error")


def _chat_file(tmp_path, n: int = 40):
    countries = ["France", "Spain", "Italy", "Japan", "Egypt"]
    capitals = ["Paris", "Madrid", "Rome", "Tokyo", "Cairo"]
    rows = []
    for i in range(n):
        country, capital = countries[i % 5], capitals[i % 5]
        messages = [{"role": "system", "content": "Answer in one word."}] if i % 2 else []
        messages += [{"role": "user", "content": f"What is the capital of {country}?"},
                     {"role": "assistant", "content": capital}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "Now write it in capital letters."},
                         {"role": "assistant", "content": capital.upper()}]
        rows.append({"messages": messages})
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_data_module_renders_prompts_with_the_template_and_evaluation_stops_at_the_marker(tmp_path):
    tokenizer = world_tokenizer()
    data = InstructionDataModule(DatasetSource(str(_chat_file(tmp_path)), format="messages"), tokenizer,
                                 format="messages", max_seq_length=128)
    data.setup("fit")
    assert {k: len(v) for k, v in data.examples.items()} == {"train": 34, "test": 2, "validation": 4}
    assert data.prompt_style.name == "chat" and data.stop == ("<|end|>",)
    record = data.records["train"][0]
    example = data.examples["train"][0]
    # the prompt of the last answer is exactly the tokens before it: what the model is given at inference
    prompt_ids = tokenizer(data.format_prompt(record), add_special_tokens=False)["input_ids"]
    last = len(example.input_ids) - len(tokenizer(f"{record['output']}<|end|>\n", add_special_tokens=False)["input_ids"])
    assert example.assistant_mask[last:] == [1] * (len(example.input_ids) - last - 1) + [0]  # answer, marker | line break
    assert example.input_ids[:last] == prompt_ids and data.format_prompt(record).endswith("<|assistant|>\n")
    evaluation = SplitEvaluation(data, tokenizer, "causal", "test")
    assert evaluation.stop == ("<|end|>",) and evaluation.add_special_tokens is False
    assert [r["output"] for r in evaluation.records] == [r["messages"][-1]["content"] for r in data.records["test"]]


def test_seq2seq_reads_the_history_and_learns_the_last_answer(tmp_path):
    tokenizer = load_tokenizer(str(WORLD_T5))
    data = InstructionDataModule(DatasetSource(str(_chat_file(tmp_path)), format="messages"), tokenizer,
                                 format="messages", architecture="seq2seq", max_seq_length=128)
    data.setup("fit")
    assert data.stop == () and data.prompt_special_tokens
    for record, example in zip(data.records["train"], data.examples["train"], strict=True):
        history = tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False, add_generation_prompt=True)
        assert example.input_ids == tokenizer(history)["input_ids"]
        assert example.labels == tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_generation_stops_at_a_stop_text_and_at_a_stop_token(tiny_dirs, word_tokenizer):
    from instructune.models.loading import load_model

    model = load_model(str(WORLD_GPT2))
    tokenizer = world_tokenizer()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    prompt = "<|user|>\nWhat is the capital of Japan?<|end|>\n<|assistant|>\n"
    [free] = generate(model, tokenizer, [prompt], max_new_tokens=12, add_special_tokens=False)
    assert free == "The word city spelled backwards is ytic." and len(calls) == 9  # 8 tokens, then EOS
    calls.clear()
    # a stop text of several tokens: the row stops once its new tokens spell it, and the answer ends before it
    assert generate(model, tokenizer, [prompt, prompt], max_new_tokens=12, stop=("backwards is",),
                    add_special_tokens=False) == ["The word city spelled"] * 2
    assert len(calls) == len(tokenizer("The word city spelled backwards is", add_special_tokens=False)["input_ids"])
    # prompt tuning decodes through its own loop (eval/virtual_token_decoding.py): the answer is still cut
    from instructune.models.strategies import STRATEGIES

    torch.manual_seed(0)
    prompted = STRATEGIES["prompt"](num_virtual_tokens=4).apply(load_model(str(WORLD_GPT2)), "causal")
    [free] = generate(prompted, tokenizer, [prompt], max_new_tokens=12, add_special_tokens=False)
    words = free.split()
    assert len(words) >= 3
    stop = " ".join(words[1:3])
    assert generate(prompted, tokenizer, [prompt], max_new_tokens=12, stop=(stop,), add_special_tokens=False) == [
        free[: free.index(stop)].strip()]
    # a stop text that is one token of the vocabulary joins EOS as a stop id (a random tiny model's words)
    tiny = load_model(str(tiny_dirs["gpt2"]))
    tiny.register_forward_pre_hook(lambda *_: calls.append(1))
    [free] = generate(tiny, word_tokenizer, ["hello"], max_new_tokens=8)
    words = free.split()
    stop = next(w for w in words if w != words[0])  # "hello hello ... paris the": paris
    at = words.index(stop)
    calls.clear()
    assert generate(tiny, word_tokenizer, ["hello"], max_new_tokens=8, stop=(stop,)) == [" ".join(words[:at])]
    assert at >= 1 and len(calls) == at + 1 < 8


def test_world_conversations_keep_the_instruction_records_and_add_follow_up_episodes():
    plain = WorldSource().load()
    chats = WorldSource(format="messages").load()
    for split in ("train", "validation", "test"):
        single = [r for r in chats[split] if not r.get("group", "").startswith("multi_turn")]
        # every instruction record, in order, as one exchange: the default world's data is untouched
        assert [(r["messages"][0]["content"], r["output"], r["task"]) for r in single] == [
            (f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"], r["output"], r["task"])
            for r in plain[split]]
        assert all(len(r["messages"]) == 2 for r in single)
        extended = None  # the exchange the episodes that follow it extend
        for r in chats[split]:
            if not r.get("group", "").startswith("multi_turn"):
                extended = r
                continue
            first, answer, follow_up, second = r["messages"]
            step = r["task"].rsplit("_then_", 1)[1]
            assert extended["messages"] == [first, answer] and r["task"].startswith(f"{extended['task']}_then_")
            assert second["content"] == OUTERS[step].apply(answer["content"])
            assert follow_up["content"] in (f"Now {OUTERS[step].then}.", f"Take your answer and {OUTERS[step].then}.")
            assert r["group"] == "multi_turn" or split == "test"
    held_out = {r["task"] for r in chats["test"] if r.get("group") == "multi_turn_held_out"}
    assert held_out and not held_out & {r["task"] for r in chats["train"]}  # held-out pairs never train
    example = next(r for r in chats["test"] if r["task"] == "capital_then_upper")
    assert example["messages"][2]["content"] in ("Now write it in capital letters.",
                                                 "Take your answer and write it in capital letters.")
    assert example["output"] == example["messages"][1]["content"].upper()
    assert WorldSource(format="messages", multi_turn_fraction=0).load()["train"] == [
        r for r in chats["train"] if r.get("group") != "multi_turn"]
    with pytest.raises(DataError, match=r"multi_turn_fraction must be within \[0, 1\], got 2"):
        WorldSource(format="messages", multi_turn_fraction=2).load()
    with pytest.raises(DataError, match="format=messages needs version 2"):
        WorldSource(format="messages", version=1).load()


def test_the_config_defaults_to_instruction_records():
    from omegaconf import OmegaConf

    from instructune.instantiate import build

    cfg = compose_train_config()
    assert (cfg.data.format, cfg.data.source.format, cfg.data.chat_template) == ("instructions", "instructions", None)
    cfg = compose_train_config("data=json", "data.path=x.jsonl", "data.format=messages",
                               "data.source.messages.field=dialog", "data.source.messages.roles={bot:assistant}")
    source = build(OmegaConf.to_container(cfg.data.source, resolve=True), "data.source")
    assert (source.format, source.messages) == ("messages", MessageFields(field="dialog", roles={"bot": "assistant"}))


TINY = ["logger=none", "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "eval.max_new_tokens=6", "eval.selection_split=null"]


@pytest.mark.slow
def test_a_run_on_a_chat_file(tmp_path, capsys, monkeypatch):
    path = _chat_file(tmp_path)
    run = tmp_path / "run"
    proc = train_in_process("data=json", f"data.path={path}", "data.format=messages", *TINY, f"hydra.run.dir={run}")
    assert proc.returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 3
    assert summary["data"] == {"train": 34, "validation": 4, "test": 2}
    tokens = summary["lengths"]["tokens"]["train"]
    assert tokens["response_mean"] > 0 and tokens["prompt_mean"] > tokens["response_mean"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    records = DatasetSource(str(path), format="messages", seed=42).load()["test"]
    assert [(r["reference"], r["messages"]) for r in rows] == [(r["output"], r["messages"][:-1]) for r in records]
    assert all("<|end|>" not in r["tuned"] for r in rows)  # cut at the end-of-turn marker if it came
    model = run / "model"
    assert json.loads((model / "prompt_style.json").read_text())["name"] == "chat"
    assert (model / "chat_template.jinja").read_text() == (WORLD_GPT2 / "chat_template.jinja").read_text()
    assert summary["config"]["prompt_style"] == "chat"
    meta = json.loads((model / "instructune.json").read_text())
    assert (meta["format"], meta["stop"]) == ("messages", ["<|end|>"])
    # `instructune generate` on the run answers a one-turn chat exactly as evaluation does: the prompt rendered
    # by the data module, generation cut at the end-of-turn marker
    from instructune.cli import main as instructune_cli
    from instructune.run_folder import load_tuned

    import instructune.eval.generate as generation

    calls = []

    def spy(*args, **kwargs):
        calls.append((args[2], kwargs))
        return generate(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    question = "What is the capital of Spain?"
    capsys.readouterr()
    instructune_cli(["generate", str(run), question, "--max-new-tokens", "6"])
    answer = capsys.readouterr().out.strip()
    tuned = load_tuned(run)
    data = InstructionDataModule(DatasetSource(str(path), format="messages"), tuned.tokenizer, format="messages")
    prompt = data.format_prompt({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]})
    [(prompts, kwargs)] = calls
    assert prompts == [prompt] and data.stop == ("<|end|>",) and data.prompt_special_tokens is False
    assert (kwargs["stop"], kwargs["add_special_tokens"]) == (data.stop, data.prompt_special_tokens)
    assert answer == generate(tuned.model, tuned.tokenizer, [prompt], "causal", 6, stop=data.stop,
                              add_special_tokens=data.prompt_special_tokens)[0]
    # `instructune evaluate` of the chat run on an instruction file stops at the marker too
    import instructune.eval.split_evaluation as split_evaluation

    stops = []
    monkeypatch.setattr(split_evaluation, "generate", lambda *a, **k: stops.append(a[7]) or [""] * len(a[2]))
    file = tmp_path / "questions.json"
    file.write_text(json.dumps([{"instruction": question, "input": "", "output": "Madrid"}] * 3))
    instructune_cli(["evaluate", str(run), "--data", str(file)])
    assert stops == [("<|end|>",)]


@pytest.mark.slow
def test_a_run_on_the_worlds_multi_turn_episodes(tmp_path):
    run = tmp_path / "run"
    proc = train_in_process("data.format=messages", "data.source.max_train_records=48", "eval.max_examples=10",
                            *TINY, "export=false", f"hydra.run.dir={run}")
    assert proc.returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    test = WorldSource(format="messages").load()["test"][:10]
    groups = {r.get("group") for r in test} - {None, ""}
    assert groups == {"paraphrase", "multi_turn", "multi_turn_held_out"}
    assert summary["status"] == "ok" and summary["eval"]["tuned"]["n"] == 10
    assert groups <= set(summary["eval"]["tuned"]) and groups <= set(summary["eval"]["base"])
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    episode = next(r for r in rows if r.get("group") == "multi_turn_held_out")
    source = next(r for r in test if r.get("group") == "multi_turn_held_out")
    assert (episode["messages"], episode["reference"], episode["task"]) == (
        source["messages"][:-1], source["output"], source["task"])
