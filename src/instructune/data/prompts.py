"""Prompt styles: how an (instruction, input) pair becomes the text the model is conditioned on.

A style is saved as ``prompt_style.json`` next to every exported model so generation and evaluation
reuse exactly the format the model was tuned on (litgpt keeps the same idea in ``prompt_style``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROMPT_STYLE_FILE = "prompt_style.json"

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
PHI3_WITH_INPUT = "<|user|>\n{instruction}\n\n{input}<|end|>\n<|assistant|>\n"
PHI3_NO_INPUT = "<|user|>\n{instruction}<|end|>\n<|assistant|>\n"
FLAN_WITH_INPUT = "Instruction: {instruction}\nInput: {input}\nResponse:"
FLAN_NO_INPUT = "Instruction: {instruction}\nResponse:"

_BUILTIN: dict[str, tuple[str, str]] = {
    "alpaca": (ALPACA_WITH_INPUT, ALPACA_NO_INPUT),
    "phi3": (PHI3_WITH_INPUT, PHI3_NO_INPUT),
    "flan": (FLAN_WITH_INPUT, FLAN_NO_INPUT),
}
STYLE_NAMES: tuple[str, ...] = (*_BUILTIN, "chat", "custom")


class PromptStyleError(ValueError):
    """A prompt style that cannot be built or applied; the message says what to change."""


@dataclass(frozen=True)
class PromptStyle:
    """A named pair of templates (with / without input), or the tokenizer's chat template.

    ``template`` may use ``{instruction}`` and ``{input}``; ``template_no_input`` is used when the
    record's input is empty (it defaults to ``template``).
    """

    name: str
    template: str = ""
    template_no_input: str = ""

    def format(self, instruction: str, input: str = "", tokenizer: Any = None) -> str:
        if self.name == "chat":
            return _chat_prompt(instruction, input, tokenizer)
        template = self.template if input else (self.template_no_input or self.template)
        return template.format(instruction=instruction, input=input)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROMPT_STYLE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> PromptStyle:
        path = Path(folder) / PROMPT_STYLE_FILE
        if not path.is_file():
            raise PromptStyleError(f"{path}: no saved prompt style; was this folder written by instructune?")
        return cls(**json.loads(path.read_text()))


def make_prompt_style(name: str, template: str | None = None, template_no_input: str | None = None) -> PromptStyle:
    """Build a style by name; ``custom`` takes the template strings from config."""
    if name in _BUILTIN:
        with_input, no_input = _BUILTIN[name]
        return PromptStyle(name, with_input, no_input)
    if name == "chat":
        return PromptStyle("chat")
    if name == "custom":
        if not template or "{instruction}" not in template:
            raise PromptStyleError("prompt style 'custom' needs data.prompt.template containing '{instruction}'")
        try:
            template.format(instruction="", input="")
            (template_no_input or template).format(instruction="", input="")
        except (KeyError, IndexError, ValueError) as e:
            raise PromptStyleError(
                f"custom prompt template may only use {{instruction}} and {{input}} (double other braces): {e!r}"
            ) from None
        return PromptStyle("custom", template, template_no_input or "")
    raise PromptStyleError(f"unknown prompt style {name!r}; choose one of {', '.join(STYLE_NAMES)}")


def _chat_prompt(instruction: str, input: str, tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise PromptStyleError(
            f"prompt style 'chat' needs a tokenizer with a chat template, and {name!r} has none; "
            "use data.prompt.style=alpaca (or phi3, flan, custom)"
        )
    content = f"{instruction}\n\n{input}" if input else instruction
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
