"""Conversations (``data.format=messages``): chat records, checked into one normal form, rendered with a chat
template, and tokenised with a per-token "is assistant" mask, so the loss covers every assistant turn.

Records: Hugging Face / OpenAI ``messages: [{role, content}]`` or ShareGPT ``conversations: [{from, value}]``
(``human`` / ``gpt`` / ``system``); the names are configurable (``MessageFields``). The normal form is
``messages: [{role: system|user|assistant, content}]`` (a system turn first if at all, a user turn somewhere,
the assistant's turn last) plus ``instruction`` (the last user turn), ``input`` ("") and ``output`` (the last
assistant turn), so evaluation, predictions.jsonl and the metrics read a conversation as an instruction record.

Rendering: ``tokenizer.apply_chat_template`` with the tokenizer's own template, or, for a base without one,
``BUILTIN_TEMPLATE`` (the ChatML layout, which TRL's ``setup_chat_format`` also uses, as plain text: a base
has no ``<|im_start|>`` token). The template in use is set on the tokenizer, so it is exported with the model.

Assistant spans by rendering prefixes, not ``return_assistant_tokens_mask`` (that needs ``{% generation %}``
blocks, which few templates have, the world's none): for the k-th assistant turn, render the conversation
before it with the generation prompt (P) and through it (F). The turn is F minus P: its content and the
template's end-of-turn marker (``<|end|>``, ``<|im_end|>``, ``<|eot_id|>``) carry labels, so a tuned model
learns to close its turn; what the template writes after the marker (a line break before the next turn) is
never generated and carries none. A template whose shorter renders are not prefixes of the longer ones (one
that rewrites earlier turns) is refused.

Tokens: each piece (the text before an assistant turn, the turn) is tokenised on its own and the ids are
concatenated, as ``tokenize_pairs`` does with prompt and response: no merge crosses a turn boundary, and each
assistant turn starts where the prompt the model is given at inference (history + generation prompt) ends.
Pieces carry the template's special tokens as text (``add_special_tokens=False``, as ``apply_chat_template``
tokenises), and a BOS the tokenizer would add and the template does not write is written in front.
Records whose pieces tokenise differently from the whole text are counted in the log (none for the world's
tokenizer, which splits text at line breaks before merging).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from instructune.data.chat_format import BUILTIN_TEMPLATE, ChatFormat, resolve_template, tokenize_conversations
from instructune.data.records import DataError, validate_rows

FORMATS = ("instructions", "messages")
ROLES = ("system", "user", "assistant")
# ShareGPT's names next to the plain ones; data.source.messages.roles adds more
DEFAULT_ROLES: dict[str, str] = {"system": "system", "user": "user", "assistant": "assistant",
                                 "human": "user", "gpt": "assistant"}
Conversation = list[dict[str, str]]


@dataclasses.dataclass(frozen=True)
class MessageFields:
    """Where a chat record keeps its turns. ``field``: the list of turns (None: ``messages``, else ShareGPT's
    ``conversations``); ``role`` / ``content``: each turn's keys (None: ``role`` / ``content``, else ShareGPT's
    ``from`` / ``value``); ``roles``: more role names mapped to system, user or assistant; ``task`` /
    ``group``: optional columns, as in ``FieldMap``."""

    field: str | None = None
    role: str | None = None
    content: str | None = None
    roles: Mapping[str, str] | None = None
    task: str | None = None
    group: str | None = None


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise DataError(f"data.format must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


# ----------------------------------------------------------------- records

def validate_conversations(rows: Sequence[Mapping[str, Any]], fields: MessageFields, where: str,
                           skip_invalid: bool = False) -> list[dict[str, Any]]:
    """Every chat record in the normal form (module docstring); invalid ones raise ``DataError`` naming the
    record, the turn and the field (or, with ``skip_invalid``, are dropped and counted in the log)."""
    role_map = _role_map(fields)
    columns = set().union(*(r.keys() for r in rows)) if len(rows) else set()
    column = _turns_column(fields, columns, where)
    for name, col in (("task", fields.task), ("group", fields.group)):
        if col is not None and rows and col not in columns:
            raise DataError(f"{where}: data.source.messages.{name}={col!r} names a column the data does not have "
                            f"(columns: {', '.join(sorted(columns))})")
    return validate_rows(rows, lambda row, i: _conversation(row, column, fields, role_map, f"{where}: record {i}"),
                         where, skip_invalid, kind="conversation")


def _role_map(fields: MessageFields) -> dict[str, str]:
    for name, role in (fields.roles or {}).items():
        if role not in ROLES:
            raise DataError(f"data.source.messages.roles: {name!r} maps to {role!r}; map a role name to "
                            f"{', '.join(ROLES)}")
    return {**DEFAULT_ROLES, **(fields.roles or {})}


def _turns_column(fields: MessageFields, columns: set[str], where: str) -> str:
    if fields.field is not None:
        if columns and fields.field not in columns:
            raise DataError(f"{where}: data.source.messages.field={fields.field!r} names a column the data does "
                            f"not have (columns: {', '.join(sorted(columns))})")
        return fields.field
    for name in ("messages", "conversations"):
        if name in columns or not columns:
            return name
    raise DataError(f"{where}: data.format=messages reads chat records with a 'messages' field (or ShareGPT's "
                    f"'conversations'), and the data has {', '.join(sorted(columns))}; name the column with "
                    "data.source.messages.field=<column>, or use data.format=instructions")


def _conversation(row: Mapping[str, Any], column: str, fields: MessageFields, role_map: dict[str, str],
                  at: str) -> dict[str, Any]:
    turns = row.get(column)
    if turns is None:
        raise DataError(f"{at}: field {column!r} is missing or null")
    if not isinstance(turns, list):
        hint = "; a CSV cell holds text only: store conversations as JSON or JSON Lines" if isinstance(turns, str) else ""
        raise DataError(f"{at}: field {column!r} must be a list of turns, got {type(turns).__name__}{hint}")
    if not turns:
        raise DataError(f"{at}: field {column!r} is empty")
    messages = [_turn(turn, fields, role_map, f"{at}: {column}[{j}]") for j, turn in enumerate(turns)]
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        raise DataError(f"{at}: {column}[{roles.index('system', 1)}]: a system turn may only come first")
    if "user" not in roles:
        raise DataError(f"{at}: field {column!r} has no user turn")
    if roles[-1] != "assistant":
        raise DataError(f"{at}: field {column!r} ends with a {roles[-1]} turn; a conversation must end with the "
                        "assistant's turn (the answer that is trained on and scored)")
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    record: dict[str, Any] = {"messages": messages, "instruction": last_user, "input": "",
                              "output": messages[-1]["content"]}
    for name in ("task", "group"):
        col = getattr(fields, name)
        value = row.get(col) if col is not None else None
        if value is not None and not isinstance(value, str):
            raise DataError(f"{at}: field {col!r} must be a string, got {type(value).__name__}")
        if col is not None and (name == "task" or value):
            record[name] = value or ""
    return record


def _turn(turn: Any, fields: MessageFields, role_map: dict[str, str], at: str) -> dict[str, str]:
    if not isinstance(turn, dict):
        raise DataError(f"{at}: a turn must be an object with a role and a content, got {type(turn).__name__}")
    role_key = fields.role or ("from" if "role" not in turn and "from" in turn else "role")
    content_key = fields.content or ("value" if "content" not in turn and "value" in turn else "content")
    role = turn.get(role_key)
    if role is None:
        raise DataError(f"{at}: field {role_key!r} is missing or null")
    if not isinstance(role, str) or role not in role_map:
        raise DataError(f"{at}: unknown role {role!r} (known: {', '.join(sorted(role_map))}); map it with "
                        "data.source.messages.roles={<name>:system|user|assistant}")
    content = turn.get(content_key)
    if content is None:
        raise DataError(f"{at}: field {content_key!r} is missing or null")
    if not isinstance(content, str):
        raise DataError(f"{at}: field {content_key!r} must be a string, got {type(content).__name__}")
    if not content.strip():
        raise DataError(f"{at}: field {content_key!r} is empty")
    return {"role": role_map[role], "content": content}


__all__ = ["BUILTIN_TEMPLATE", "ChatFormat", "FORMATS", "MessageFields", "ROLES", "check_format", "resolve_template",
           "tokenize_conversations", "validate_conversations"]
