"""Chat templates as token spans: which template renders a conversation, where each assistant turn (and
its end-of-turn marker) sits in the tokens, and the examples the collator takes. The records side (reading
and validating conversations) is ``conversations``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from instructune.data.records import DataError
from instructune.data.tokenize import OVERLENGTH_POLICIES, OverlengthError, TokenizedExample, TokenizeStats

log = logging.getLogger(__name__)

# The built-in template for a base without one: ChatML, every turn closed by <|im_end|>.
BUILTIN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ----------------------------------------------------------------- rendering

def resolve_template(tokenizer: Any, choice: str | None) -> str:
    """``data.chat_template``: None, the tokenizer's own template (the built-in one when it has none);
    ``builtin``; a path to a ``.jinja`` file; or the template text itself."""
    if choice is None:
        own = getattr(tokenizer, "chat_template", None)
        own = own.get("default") if isinstance(own, dict) else own
        if own:
            return own
        log.info("%s has no chat template: conversations use the built-in one (ChatML layout: <|im_start|>role ... "
                 "<|im_end|>), which is saved with the model", getattr(tokenizer, "name_or_path", "the tokenizer"))
        return BUILTIN_TEMPLATE
    if choice == "builtin":
        return BUILTIN_TEMPLATE
    if "{%" in choice or "{{" in choice:
        return choice
    path = Path(choice).expanduser()
    if not path.is_file():
        raise DataError(f"data.chat_template={choice!r}: no such file; give null (the tokenizer's template), "
                        "builtin, a .jinja file, or the template text")
    return path.read_text(encoding="utf-8")


class ChatFormat:
    """The run's tokenizer with its chat template installed: renders prompts, splits a conversation into
    pieces, and knows the end-of-turn marker (``end_of_turn``) that generation stops at."""

    def __init__(self, tokenizer: Any, template: str | None = None, bos_in_text: bool = True) -> None:
        self.tokenizer = tokenizer
        tokenizer.chat_template = resolve_template(tokenizer, template)
        self.bos = _bos_to_write(tokenizer) if bos_in_text else ""

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
        return text if not self.bos or text.startswith(self.bos) else self.bos + text

    def prompt(self, history: Sequence[Mapping[str, str]]) -> str:
        """What the model is given to answer: the turns before the answer, and the generation prompt."""
        return self.render(history, add_generation_prompt=True)

    def pieces(self, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
        """The conversation's text as (piece, is an assistant turn), in order; joined, the whole render. An
        assistant piece ends with the end-of-turn marker: what the template writes after it (a line break
        before the next turn) is template text, never generated, so it carries no label."""
        marker = self.end_of_turn
        out: list[tuple[str, bool]] = []
        for text, is_assistant in self._turns(messages):
            cut = text.rfind(marker) + len(marker) if is_assistant and marker in text else len(text)
            for piece, flag in ((text[:cut], is_assistant), (text[cut:], False)):
                if not flag and out and not out[-1][1]:  # template text running on into the next turn: one piece
                    out[-1] = (out[-1][0] + piece, False)
                elif piece:
                    out.append((piece, flag))
        return out

    def _turns(self, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
        """``pieces`` with each assistant piece running up to the next turn (the template's whole turn)."""
        out: list[tuple[str, bool]] = []
        done = ""
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:k], add_generation_prompt=True)
            through = self.render(messages[: k + 1], add_generation_prompt=False)
            if not before.startswith(done) or not through.startswith(before) or through == before:
                raise DataError(f"turn {k}: the chat template does not render the conversation before this "
                                "assistant turn as the start of the conversation through it, so the turn's tokens "
                                "cannot be found; use data.chat_template=builtin (or a template that renders "
                                "earlier turns the same whatever follows)")
            out += [(before[len(done):], False), (through[len(before):], True)]
            done = through
        full = self.render(messages, add_generation_prompt=False)
        if not full.startswith(done):
            raise DataError("the chat template renders the whole conversation differently from its turns; use "
                            "data.chat_template=builtin")
        out.append((full[len(done):], False))
        return [(text, is_assistant) for text, is_assistant in out if text]

    @functools.cached_property
    def end_of_turn(self) -> str:
        """The text the template closes an assistant turn with (after its content, whitespace trimmed)."""
        content = "Xyzzy 42"
        try:
            turn = self._turns([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": content}])
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - a template raising on a plain exchange is unusable here
            raise DataError(f"the chat template cannot render a user / assistant exchange: {e}") from None
        text = next((t for t, is_assistant in turn if is_assistant), "")
        marker = text[text.find(content) + len(content):].strip() if content in text else ""
        if not marker:
            raise DataError("the chat template writes nothing after an assistant turn's content (no end-of-turn "
                            "marker), so a tuned model could not learn to stop; use data.chat_template=builtin")
        return marker


def _bos_to_write(tokenizer: Any) -> str:
    """The BOS text a tokenizer adds by itself (Llama's ``<s>``), so rendered text tokenised without special
    tokens starts as the tokenizer's own encoding would; "" when it adds none (GPT-2, the world's)."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return ""
    added = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos if added[:1] == [bos_id] and plain[:1] != [bos_id] else ""


# ----------------------------------------------------------------- tokens

def tokenize_conversations(conversations: Sequence[Sequence[Mapping[str, str]]], chat: ChatFormat,
                           max_seq_length: int, overlength: str = "truncate", where: str = "data"
                           ) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Causal examples whose ``assistant_mask`` marks every assistant turn's tokens (content and end-of-turn
    marker). Over ``max_seq_length``: ``truncate`` cuts from the right and drops a conversation left with no
    assistant target, ``drop`` drops it, ``error`` stops (``OverlengthError``), as ``tokenize_pairs`` does."""
    if overlength not in OVERLENGTH_POLICIES:
        raise ValueError(f"overlength must be one of {', '.join(OVERLENGTH_POLICIES)}, got {overlength!r}")
    split: list[list[tuple[str, bool]]] = []
    for i, messages in enumerate(conversations):
        try:
            split.append(chat.pieces(messages))
        except DataError as e:
            raise DataError(f"{where}: record {i}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the template's own refusal (jinja raise_exception), one line
            raise DataError(f"{where}: record {i}: the chat template refused it: {e}") from None
    if not split:
        return [], TokenizeStats(0, 0, 0)
    texts = [text for pieces in split for text, _ in pieces]
    ids = iter(chat.tokenizer(texts, add_special_tokens=False)["input_ids"])
    wholes = chat.tokenizer(["".join(t for t, _ in pieces) for pieces in split], add_special_tokens=False)["input_ids"]
    examples: list[TokenizedExample] = []
    kept: list[int] = []
    dropped = truncated = dropped_overlength = seams = 0
    for i, (pieces, whole) in enumerate(zip(split, wholes, strict=True)):
        tokens: list[int] = []
        mask: list[int] = []
        for _, is_assistant in pieces:
            piece = list(next(ids))
            tokens += piece
            mask += [int(is_assistant)] * len(piece)
        seams += tokens != list(whole)
        if len(tokens) > max_seq_length:
            if overlength == "error":
                raise OverlengthError(i, len(tokens), max_seq_length)
            if overlength == "drop":
                dropped_overlength += 1
                continue
            tokens, mask = tokens[:max_seq_length], mask[:max_seq_length]
            if not any(mask[1:]):  # no assistant token is a target any more
                dropped += 1
                continue
            truncated += 1
        examples.append(TokenizedExample(tokens, mask.index(1), assistant_mask=mask))
        kept.append(i)
    if seams:
        log.warning("%s: %d of %d conversation(s) tokenise differently at a turn boundary than as one text; their "
                    "turns were tokenised apart, so each assistant turn's labels start exactly after its prompt",
                    where, seams, len(split))
    return examples, TokenizeStats(len(examples), dropped, truncated, dropped_overlength, tuple(kept))
