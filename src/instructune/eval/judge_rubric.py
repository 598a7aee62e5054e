"""The judge's rubric prompt and the reading of its reply: the book's wording by default (Raschka,
"Build a Large Language Model (From Scratch)", ch. 7), or a rubric file with ``{instruction}``,
``{input}``, ``{prompt}`` (the book's Alpaca rendering of both), ``{reference}`` and ``{response}``.
No torch here: the sweep report reads judge results without loading a model."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from instructune.data.records import DataError

FIELDS = ("instruction", "input", "prompt", "reference", "response")
# The book's prompt, word for word (its ``format_input`` entry rendered into {prompt}).
BOOK_RUBRIC = ("Given the input `{prompt}` and correct output `{reference}`, score the model response "
               "`{response}` on a scale from 0 to 100, where 100 is the best score. "
               "Respond with the integer number only.")
_FIELD = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")
# Numbers as they appear in a reply: a sign or a decimal part marks one that is no integer score.
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d+)(\.\d+)?")


def book_input(instruction: str, input: str) -> str:
    """The book's ``format_input``: the Alpaca instruction block, the input block only when non-empty
    (the book keeps the no-input preamble for both, unlike ``ALPACA_WITH_INPUT``)."""
    text = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            f"request.\n\n### Instruction:\n{instruction}")
    return text + (f"\n\n### Input:\n{input}" if input else "")


@dataclass(frozen=True)
class Rubric:
    template: str
    source: str  # "book" or the rubric file's path

    @property
    def sha256(self) -> str:
        """What identifies the rubric in the results: another wording, another score."""
        return hashlib.sha256(self.template.encode()).hexdigest()

    def fill(self, instruction: str, input: str, reference: str, response: str) -> str:
        """The prompt for one item. One pass over the template: an answer that itself contains
        ``{reference}`` is not substituted again, and braces that name no field stay as they are."""
        values = {"instruction": instruction, "input": input, "prompt": book_input(instruction, input),
                  "reference": reference, "response": response}
        return _FIELD.sub(lambda m: values[m.group(1)], self.template)


def load_rubric(path: Path | None) -> Rubric:
    """The book's rubric, or a file's; a file must show the judge the response."""
    if path is None:
        return Rubric(BOOK_RUBRIC, "book")
    try:
        template = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the rubric: {e}") from None
    if "{response}" not in template:
        raise DataError(f"{path}: the rubric has no {{response}} field, so the judge would never see the answer; "
                        f"fields: {', '.join('{' + f + '}' for f in FIELDS)}")
    return Rubric(template, str(path))


def parse_score(reply: str) -> int | None:
    """The first integer from 0 to 100 in the reply (``"Score: 85/100"`` gives 85); negative,
    decimal and larger numbers are skipped. None when there is none: recorded, never read as 0."""
    for sign, digits, decimals in _NUMBER.findall(reply):
        if not sign and not decimals and int(digits) <= 100:
            return int(digits)
    return None
