import json

import pytest

from instructune.data.prompts import PromptStyle, PromptStyleError, make_prompt_style


def test_alpaca_with_input_is_the_exact_stanford_header():
    assert make_prompt_style("alpaca").format("Add the numbers.", "2 + 3") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 + 3\n\n### Response:\n"
    )


def test_alpaca_without_input_drops_the_input_section():
    assert make_prompt_style("alpaca").format("Name a colour.") == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a colour.\n\n### Response:\n"
    )


def test_phi3_and_flan():
    assert make_prompt_style("phi3").format("Say hi.") == "<|user|>\nSay hi.<|end|>\n<|assistant|>\n"
    assert make_prompt_style("phi3").format("Echo.", "x") == "<|user|>\nEcho.\n\nx<|end|>\n<|assistant|>\n"
    assert make_prompt_style("flan").format("Translate.", "hallo") == "Instruction: Translate.\nInput: hallo\nResponse:"
    assert make_prompt_style("flan").format("Say hi.") == "Instruction: Say hi.\nResponse:"


def test_chat_uses_the_tokenizer_template(word_tokenizer):
    word_tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
                                   "{% if add_generation_prompt %}[assistant] {% endif %}"
    style = make_prompt_style("chat")
    assert style.format("Echo.", "x", word_tokenizer) == "[user] Echo.\n\nx\n[assistant] "


def test_chat_without_template_is_a_clear_error(word_tokenizer):
    with pytest.raises(PromptStyleError, match=r"^prompt style 'chat' needs a tokenizer with a chat template, and "
                                                r"'' has none; use data.prompt.style=alpaca \(or phi3, flan, custom\)$"):
        make_prompt_style("chat").format("Echo.", "", word_tokenizer)


def test_custom_template_and_errors():
    style = make_prompt_style("custom", "Q: {instruction} {input}\nA:", "Q: {instruction}\nA:")
    assert style.format("x", "y") == "Q: x y\nA:"
    assert style.format("x") == "Q: x\nA:"
    with pytest.raises(PromptStyleError, match="needs data.prompt.template"):
        make_prompt_style("custom")
    with pytest.raises(PromptStyleError, match=r"may only use \{instruction\} and \{input\} .*'oops'"):
        make_prompt_style("custom", "{instruction} {oops}")
    with pytest.raises(PromptStyleError, match="unknown prompt style 'nope'"):
        make_prompt_style("nope")


def test_style_round_trips_through_its_file(tmp_path):
    style = make_prompt_style("custom", "Q: {instruction}\nA:")
    path = style.save(tmp_path)
    assert json.loads(path.read_text()) == {"name": "custom", "template": "Q: {instruction}\nA:", "template_no_input": ""}
    assert PromptStyle.load(tmp_path) == style
