"""The two kinds of judge: an OpenAI-compatible HTTP endpoint (what Ollama, vLLM, llama.cpp's server
and hosted APIs serve) spoken to with the standard library, and a local Hugging Face model folder
answering greedily. Both turn rubric prompts into raw replies; reading a score is not their job."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, InvalidURL
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from instructune.models.loading import ModelError

RETRY_STATUS = (408, 429, 500, 502, 503, 504)  # overloaded or restarting: worth another try
MAX_WAIT_S = 60.0  # the most one backoff (or a server's Retry-After) makes us wait


@dataclass(frozen=True)
class Reply:
    text: str
    truncated: bool = False  # the judge saw only the end of the prompt (a local model's position limit)


class Judge(Protocol):
    kind: str  # "http" or "local"
    model: str  # the model id the server serves, or the folder
    identity: str  # what a resumed judging must match: another judge, other scores
    default_name: str
    batch_size: int

    def replies(self, prompts: list[str], items: list[str]) -> list[Reply]:
        """One reply per prompt; ``items`` name the items for error messages."""


def is_url(spec: str) -> bool:
    return "://" in spec


def shown(url: str) -> str:
    """The URL as messages and results show it: without ``user:password@``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "") if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc))


class HttpJudge:
    """``POST {base}/chat/completions`` one item at a time, temperature 0. ``OPENAI_API_KEY``, when
    set, goes in the Authorization header and nowhere else (no log, no file, no message)."""

    kind = "http"
    batch_size = 1

    def __init__(self, base_url: str, model: str | None = None, max_tokens: int = 16, timeout: float = 120.0,
                 retries: int = 5, backoff: float = 1.0) -> None:
        try:
            parts = urlsplit(base_url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is no number or out of range
        except ValueError as e:
            raise ModelError(f"--judge {base_url}: not a valid URL: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"--judge {shown(base_url)}: not an http(s) URL; give a base URL such as "
                             "http://127.0.0.1:8000/v1 (or a local model folder)")
        if parts.username or parts.password:
            raise ModelError(f"--judge {shown(base_url)}: credentials in the URL would end up in the results; "
                             "set OPENAI_API_KEY instead (sent as a Bearer token)")
        self.base = base_url.rstrip("/")
        self.max_tokens, self.timeout, self.retries, self.backoff = max_tokens, timeout, retries, backoff
        self.model = model or self._first_model()
        self.identity = f"{shown(self.base)} model={self.model}"
        self.default_name = self.model

    def _first_model(self) -> str:
        url = f"{self.base}/models"
        listed = self._call(url, None, "the model list")
        data = listed.get("data") if isinstance(listed, dict) else None
        ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if not ids or not isinstance(ids[0], str):
            raise ModelError(f"{shown(url)}: lists no models ({json.dumps(listed)[:200]}); pass --judge-model")
        return ids[0]

    def replies(self, prompts: list[str], items: list[str]) -> list[Reply]:
        url = f"{self.base}/chat/completions"
        out = []
        for prompt, item in zip(prompts, items, strict=True):
            body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                    "max_tokens": self.max_tokens, "stream": False}
            reply = self._call(url, body, item)
            try:
                content = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise ModelError(f"{shown(url)}: reply for {item} has no choices[0].message.content: "
                                 f"{json.dumps(reply)[:200]}") from None
            if content is not None and not isinstance(content, str):
                raise ModelError(f"{shown(url)}: reply for {item}: message.content is {type(content).__name__}, "
                                 "not text")
            out.append(Reply(content or ""))
        return out

    def _call(self, url: str, body: dict[str, Any] | None, item: str) -> Any:
        """GET (no body) or POST JSON; retries 408/429/5xx, timeouts and dropped connections with
        exponential backoff (or the server's Retry-After), fails at once on anything else."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "instructune-judge"}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        where = f"{shown(url)} ({item})"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
            wait = min(MAX_WAIT_S, self.backoff * 2 ** attempt)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as e:
                detail = _body_text(e)
                if e.code not in RETRY_STATUS:
                    raise ModelError(f"{where}: HTTP {e.code} {e.reason}: {detail}") from None
                problem = f"HTTP {e.code} {e.reason}: {detail}"
                wait = _retry_after(e.headers.get("Retry-After"), wait)
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, ConnectionRefusedError):
                    raise ModelError(f"{where}: connection refused; is the server running at {shown(self.base)}?") \
                        from None
                if not isinstance(reason, TimeoutError | ConnectionError):
                    raise ModelError(f"{where}: cannot connect: {reason}") from None
                problem = f"{type(reason).__name__}: {reason}"
            except (InvalidURL, ValueError) as e:
                raise ModelError(f"{where}: {e}") from None
            except (TimeoutError, ConnectionError, HTTPException) as e:
                problem = f"{type(e).__name__}: {e}"
            if attempt == self.retries:
                raise ModelError(f"{where}: {problem} (gave up after {self.retries + 1} attempts)")
            print(f"judge: {where}: {problem}; retrying in {wait:.1f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = raw[:200].decode(errors="replace")
            raise ModelError(f"{where}: the reply is not JSON: {text!r}; is this an OpenAI-compatible /v1 URL?") \
                from None


def _body_text(error: urllib.error.HTTPError) -> str:
    try:
        return error.read()[:200].decode(errors="replace").strip() or "(empty body)"
    except OSError:
        return "(no body)"


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(MAX_WAIT_S, max(0.0, float(header))) if header else default
    except ValueError:  # an HTTP date: not worth parsing for a judge
        return default


class LocalJudge:
    """A Hugging Face model folder (causal or seq2seq), or an instructune run folder, answering
    greedily with ``instructune.eval.generate``. The rubric goes through the folder's prompt style (a
    run folder), else its chat template, else as plain text. A causal model with absolute positions
    sees the end of a longer prompt (the rubric's last words and the answer cue), flagged per item."""

    kind = "local"

    def __init__(self, folder: str, max_new_tokens: int = 16, batch_size: int = 8) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ModelError(f"--judge {folder}: no such folder, and not a URL (http://host:port/v1)")
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        resolved = self.folder.resolve()
        self.model = self.identity = str(resolved)
        self.default_name = resolved.parent.name if resolved.name == "model" else resolved.name
        self._loaded: tuple[Any, Any, str, Any, int | None] | None = None  # loaded when there is work

    def _load(self) -> tuple[Any, Any, str, Any, int | None]:
        """(model, tokenizer, architecture, prompt style or None, prompt tokens it takes)."""
        if self._loaded is None:
            from instructune.models.limits import positions_left

            model, tokenizer, architecture, style = _load(self.folder)
            left = positions_left(model) if architecture == "causal" else None
            room = None if left is None else left - self.max_new_tokens
            if room is not None and room < 1:
                raise ModelError(f"{self.folder}: --max-new-tokens={self.max_new_tokens} leaves no room for the "
                                 f"prompt in {left} positions")
            self._loaded = model, tokenizer, architecture, style, room
        return self._loaded

    def render(self, text: str) -> str:
        """The rubric prompt as this model is asked things."""
        _, tokenizer, _, style, _ = self._load()
        if style is not None:
            return style.format(text, "", tokenizer)
        if not getattr(tokenizer, "chat_template", None):
            return text
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and rendered.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
            rendered = rendered[len(bos):]  # the template writes BOS and tokenising adds it again
        return rendered

    def replies(self, prompts: list[str], items: list[str]) -> list[Reply]:
        from instructune.eval.generate import generate

        model, tokenizer, architecture, _, room = self._load()
        rendered = [self.render(p) for p in prompts]
        texts = generate(model, tokenizer, rendered, architecture, self.max_new_tokens, batch_size=self.batch_size,
                         max_prompt_tokens=room)
        lengths = [len(ids) for ids in tokenizer(rendered, add_special_tokens=True)["input_ids"]]
        return [Reply(t, room is not None and n > room) for t, n in zip(texts, lengths, strict=True)]


def _load(folder: Path) -> tuple[Any, Any, str, Any]:
    """(model, tokenizer, architecture, prompt style or None) of a run folder or a plain model folder."""
    from instructune.run_folder import META_FILE, MODEL_DIR, load_tuned

    if (folder / META_FILE).is_file() or (folder / MODEL_DIR / META_FILE).is_file():
        tuned = load_tuned(folder)
        return tuned.model, tuned.tokenizer, tuned.architecture, tuned.prompt_style
    from transformers import AutoConfig

    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.models.loading import load_model, local_model_dir

    local_model_dir(str(folder))  # a clear error for a missing folder or one without config.json
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder}: could not read config.json: {str(e).splitlines()[0]}") from None
    architecture = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    model = load_model(str(folder), architecture)
    model.eval()
    return model, load_tokenizer(str(folder)), architecture, None


def make_judge(spec: str, model: str | None = None, max_new_tokens: int = 16, batch_size: int = 8,
               timeout: float = 120.0, retries: int = 5, backoff: float = 1.0) -> Judge:
    """``spec``: an OpenAI-compatible base URL, or a local model / run folder."""
    if is_url(spec):
        return HttpJudge(spec, model, max_new_tokens, timeout, retries, backoff)
    if model is not None:
        raise ModelError(f"--judge-model names a model served at a URL; --judge {spec} is a local folder")
    return LocalJudge(spec, max_new_tokens, batch_size)
