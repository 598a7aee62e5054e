"""`instructune judge`: a tiny local model whose greedy replies are known by construction, the
embedded world-gpt2 as a judge on a real run folder, and a real OpenAI-compatible HTTP server on
loopback (models list, chat completions, a 503 to retry, a crash to resume from, broken replies),
each checked against scores, means and intervals worked out in the test; and the sweep report's
judge column."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import REPO, train_in_process
from instructune.bootstrap import arm_interval
from instructune.cli import main
from instructune.data.records import DataError
from instructune.judge import judge_run
from instructune.eval.judge_rubric import parse_score
from instructune.models.loading import ModelError

# The book's rubric (ch. 7), spelled out here rather than imported: what the judge must be sent.
BOOK = ("Given the input `Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}{input_block}` and correct output `{reference}`, "
        "score the model response `{response}` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only.")
ITEMS = [  # (instruction, input, reference, tuned answer)
    ("Name the capital of France.", "", "Paris", "Paris"),
    ("Opposite of hot?", "hot", "cold", "warm"),
    ("Spell big backwards.", "big", "gib", "gib"),
    ("Add two and two.", "", "4", "five"),
    ("Plural of mouse?", "mouse", "mice", "mouses"),
    ("Say nothing useful.", "", "ok", ""),  # empty answer: the server declines to score it
]
EXPECTED = [100, 20, 100, 20, 20, None]
KEY = "sk-test-secret-123456"


def book_prompt(instruction: str, input: str, reference: str, response: str) -> str:
    return BOOK.format(instruction=instruction, input_block=f"\n\n### Input:\n{input}" if input else "",
                       reference=reference, response=response)


def write_run(folder, items=ITEMS, base=False):
    """A run folder as far as the judge reads it: predictions.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"instruction": i, "input": x, "reference": r, "task": "t", "tuned": a, "seen": True,
              **({"base": "?"} if base else {})} for i, x, r, a in items]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


class JudgeServer:
    """An OpenAI-compatible server: ``/v1/models`` lists ``tiny-judge``; ``/v1/chat/completions``
    replies 100 when the response in the book's prompt equals the reference, 20 when it differs, and
    a sentence without a number for an empty response. Knobs: 503s to send first, a 400 after some
    replies (a crash mid-run), a non-JSON body."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, object]] = []
        self.unavailable = 0
        self.reject_after: int | None = None
        self.html = False
        self.served = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def chats(self) -> list[dict]:
        return [body for method, path, _, body in self.requests if path == "/v1/chat/completions"]

    def _handler(self):
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, content_type="application/json", headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                state.requests.append(("GET", self.path, dict(self.headers), None))
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "tiny-judge", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if state.html:
                    return self._send(200, b"<html>maintenance</html>", "text/html")
                if state.unavailable:
                    state.unavailable -= 1
                    return self._send(503, {"error": "loading"}, headers=[("Retry-After", "0")])
                if state.reject_after is not None and state.served >= state.reject_after:
                    return self._send(400, {"error": "context length exceeded"})
                found = re.search(r"correct output `(.*)`, score the model response `(.*)` on a scale",
                                  body["messages"][-1]["content"], re.DOTALL)
                reference, response = found.groups() if found else ("", "")
                reply = "I cannot score an empty answer." if not response else "100" if response == reference else "20"
                state.served += 1
                self._send(200, {"id": "c1", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}]})

        return Handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.close()


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _cell(values) -> tuple[float, float, float]:
    iv = arm_interval([values])
    return iv.mean, iv.low, iv.high


def test_parse_score_takes_the_first_integer_from_0_to_100():
    cases = {"85": 85, " 100\n": 100, "Score: 85/100": 85, "0": 0, "I'd say 150, no, 90": 90, "-5 then 7": 7,
             "7.5 or 60": 60, "**42**": 42, "score=73.": 73, "none": None, "": None, "101": None, "3.0": None}
    assert {reply: parse_score(reply) for reply in cases} == cases


def test_an_http_judge_scores_every_item_through_the_cli(server, tmp_path):
    run = write_run(tmp_path / "run")
    server.unavailable = 1  # the first chat request gets a 503 (Retry-After: 0): retried, not fatal
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    proc = subprocess.run([sys.executable, "-m", "instructune.cli", "judge", str(run), "--judge", server.url],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    mean, low, high = _cell([s for s in EXPECTED if s is not None])  # 100, 20, 100, 20, 20: mean 52
    assert mean == 52.0
    assert proc.stdout.splitlines()[0] == f"judge score: 52.0 (95% CI {low:.1f}–{high:.1f}, n=5, 1 unparsable)"
    assert "HTTP 503 Service Unavailable" in proc.stderr and "retrying in 0.0 s" in proc.stderr
    # the requests: the model list, then one chat per item (the first twice), as the book asks them
    chat = ("POST", "/v1/chat/completions")
    assert [(m, p) for m, p, _, _ in server.requests] == [("GET", "/v1/models"), *[chat] * 7]
    assert server.chats[0] == server.chats[1]
    for body, (instruction, input, reference, answer) in zip(server.chats[1:], ITEMS, strict=True):
        assert body == {"model": "tiny-judge", "temperature": 0, "max_tokens": 16, "stream": False,
                        "messages": [{"role": "user", "content": book_prompt(instruction, input, reference, answer)}]}
    assert {h["Authorization"] for _, _, h, _ in server.requests} == {f"Bearer {KEY}"}
    lines = _jsonl(run / "judge" / "tiny-judge.jsonl")
    fields = ("index", "instruction", "input", "reference", "response", "answer", "score")
    assert [tuple(line[f] for f in fields) for line in lines] == [
        (i, *item, "tuned", s) for i, (item, s) in enumerate(zip(ITEMS, EXPECTED, strict=True))]
    assert [line["raw"] for line in lines] == ["100", "20", "100", "20", "20", "I cannot score an empty answer."]
    summary = json.loads((run / "judge" / "tiny-judge.json").read_text())
    assert {k: summary[k] for k in ("name", "judge", "kind", "model", "answer", "rubric", "items", "n", "unparsable",
                                    "mean", "low", "high")} == {
        "name": "tiny-judge", "judge": f"{server.url} model=tiny-judge", "kind": "http", "model": "tiny-judge",
        "answer": "tuned", "rubric": "book", "items": 6, "n": 5, "unparsable": 1, "mean": mean, "low": low,
        "high": high}
    # the key went to the server and nowhere else
    written = "".join(p.read_text() for p in (run / "judge").iterdir())
    assert KEY not in written + proc.stdout + proc.stderr


def test_a_crash_loses_nothing_and_a_rerun_judges_only_the_rest(server, tmp_path, capsys):
    run = write_run(tmp_path / "run")
    server.reject_after = 3  # the server fails for good after three replies
    with pytest.raises(ModelError, match=re.escape(f"{server.url}/chat/completions (item 3, predictions.jsonl line 4): "
                                                   "HTTP 400 Bad Request")):
        judge_run(run, server.url, backoff=0)
    scored = run / "judge" / "tiny-judge.jsonl"
    assert [line["score"] for line in _jsonl(scored)] == EXPECTED[:3]
    assert not (run / "judge" / "tiny-judge.json").exists()
    with scored.open("a") as f:
        f.write('{"index": 3, "instruc')  # a line cut short as the process died
    server.reject_after, before = None, len(server.chats)
    result = judge_run(run, server.url, backoff=0)
    sent = [body["messages"][0]["content"] for body in server.chats[before:]]
    assert sent == [book_prompt(*item) for item in ITEMS[3:]]  # only the items not yet scored
    assert result.judged_now == 3 and [line["index"] for line in _jsonl(scored)] == list(range(6))
    assert [line["score"] for line in _jsonl(scored)] == EXPECTED
    mean, low, high = _cell([s for s in EXPECTED if s is not None])
    assert (result.summary["mean"], result.summary["low"], result.summary["high"]) == (mean, low, high)
    # everything judged: nothing is sent (the model named, so not even the model list), nothing rewritten
    summary_text, before = result.summary_path.read_text(), len(server.requests)
    assert main(["judge", str(run), "--judge", server.url, "--judge-model", "tiny-judge"]) is None
    assert len(server.requests) == before and result.summary_path.read_text() == summary_text
    assert "nothing sent to the judge" in capsys.readouterr().out
    # another rubric under the same name is refused; under another name it is a second result
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate `{response}` against `{reference}` from 0 to 100.")
    with pytest.raises(DataError, match="rubric_sha256=.*pass --name to keep both"):
        judge_run(run, server.url, rubric_path=rubric)
    other = judge_run(run, server.url, rubric_path=rubric, name="short rubric", backoff=0)
    assert other.scored_path.name == "short_rubric.jsonl"
    assert server.chats[-1]["messages"][0]["content"] == "Rate `` against `ok` from 0 to 100."
    assert result.summary_path.read_text() == summary_text


def test_http_errors_name_the_url_and_the_item(server, tmp_path, capsys):
    run = write_run(tmp_path / "run", base=True)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    proc = subprocess.run([sys.executable, "-m", "instructune.cli", "judge", str(run), "--judge", closed],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {closed}/models (the model list): connection refused; is the server "
                                   f"running at {closed}?")

    def cli_error(*args: str) -> str:
        with pytest.raises(SystemExit) as e:
            main(["judge", str(run), *args])
        return str(e.value.code)

    server.html = True
    assert cli_error("--judge", server.url, "--answer", "base") == (
        f"error: {server.url}/chat/completions (item 0, predictions.jsonl line 1): the reply is not JSON: "
        "'<html>maintenance</html>'; is this an OpenAI-compatible /v1 URL?")
    assert not (run / "judge" / "tiny-judge.base.jsonl").exists()
    base = server.url.removesuffix("/v1")  # the base URL without /v1: the server's 404
    assert cli_error("--judge", base) == (f"error: {base}/models (the model list): HTTP 404 Not Found: "
                                          '{"error": "not found"}')
    assert cli_error("--judge", "ftp://x/v1").startswith("error: --judge ftp://x/v1: not an http(s) URL")
    secret = server.url.replace("http://", "http://me:hunter22@")
    assert cli_error("--judge", secret) == (f"error: --judge {server.url}: credentials in the URL would end up in the "
                                            "results; set OPENAI_API_KEY instead (sent as a Bearer token)")
    assert cli_error("--judge", server.url, "--max-new-tokens", "0") == "error: --max-new-tokens=0: must be positive"
    assert cli_error("--judge", str(tmp_path / "nowhere")).startswith(f"error: --judge {tmp_path / 'nowhere'}: no such")
    rubric = tmp_path / "r.txt"
    rubric.write_text("Score {answer} please")
    assert cli_error("--judge", server.url, "--rubric", str(rubric)).startswith(
        f"error: {rubric}: the rubric has no {{response}}")
    with pytest.raises(SystemExit) as e:
        main(["judge", str(tmp_path / "missing"), "--judge", server.url])
    assert e.value.code == f"error: {tmp_path / 'missing'}: no such run folder"
    no_base = write_run(tmp_path / "no-base")
    with pytest.raises(SystemExit) as e:
        main(["judge", str(no_base), "--judge", server.url, "--answer", "base"])
    assert e.value.code == (f"error: {no_base / 'predictions.jsonl'} line 1: no text field 'base' (was the run "
                            "evaluated with eval.base=true?)")
    # 503 for good: retried, then given up, every attempt counted
    server.html, server.unavailable, before = False, 10, len(server.chats)
    with pytest.raises(ModelError, match=re.escape('HTTP 503 Service Unavailable: {"error": "loading"} '
                                                   "(gave up after 3 attempts)")):
        judge_run(run, server.url, retries=2, backoff=0)
    assert len(server.chats) - before == 3
    capsys.readouterr()


# A judge whose greedy reply is known: a GPT-2 whose blocks and positions are zeroed, so the logits at
# a position depend on that position's token alone, through an identity embedding and a head that maps
# each token to its successor. It reads the last word of the prompt and answers a fixed chain.
VOCAB = ["<eos>", "<unk>", "90", "10", "hmm", "great", "bad", "meh", "verdict"]
NEXT = {"<eos>": "<eos>", "<unk>": "10", "90": "<eos>", "10": "<eos>", "hmm": "<eos>", "great": "90", "bad": "10",
        "meh": "hmm", "verdict": "90"}


def successor_judge(folder, chat_template=None):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    n = len(VOCAB)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=n, n_positions=64, n_embd=n, n_layer=1, n_head=1,
                                       tie_word_embeddings=False, eos_token_id=0, bos_token_id=0, pad_token_id=0))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(n))
        model.transformer.ln_f.weight.fill_(1.0)
        for i, word in enumerate(VOCAB):
            model.lm_head.weight[VOCAB.index(NEXT[word]), i] = 10.0
    model.save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return folder


def test_a_local_model_judges_with_a_rubric_file_and_its_chat_template(tmp_path, capsys):
    answers = ["that was great", "so bad", "meh", "no idea at all", "great"]
    run = write_run(tmp_path / "run", [(f"q{i}", "", "ref", a) for i, a in enumerate(answers)])
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Judge {instruction} against {reference} : {response}")  # the answer's last word ends the prompt
    judge = successor_judge(tmp_path / "plain")
    main(["judge", str(run), "--judge", str(judge), "--rubric", str(rubric), "--batch-size", "2"])
    lines = _jsonl(run / "judge" / "plain.jsonl")
    # great -> 90, bad -> 10, meh -> "hmm" (no number), unknown words -> <unk> -> 10
    assert [(line["raw"], line["score"]) for line in lines] == [("90", 90), ("10", 10), ("hmm", None), ("10", 10),
                                                                 ("90", 90)]
    mean, low, high = _cell([90, 10, 10, 90])
    assert capsys.readouterr().out.splitlines()[0] == (
        f"judge score: {mean:.1f} (95% CI {low:.1f}–{high:.1f}, n=4, 1 unparsable)")
    summary = json.loads((run / "judge" / "plain.json").read_text())
    assert (summary["kind"], summary["rubric"], summary["unparsable"], summary["truncated"]) == (
        "local", str(rubric), 1, 0)
    # the same model with a chat template: the prompt now ends in the template's "verdict", whatever the answer
    chat = successor_judge(tmp_path / "chat", "{% for m in messages %}{{ m['content'] }} {% endfor %}verdict")
    result = judge_run(run, str(chat), rubric_path=rubric)
    assert [(line["raw"], line["score"]) for line in _jsonl(result.scored_path)] == [("90", 90)] * 5
    assert (result.summary["mean"], result.summary["low"], result.summary["high"]) == (90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("judged-run")
    assert train_in_process("logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2",
                            "data.source.max_train_records=16", "eval.base=false", "eval.max_examples=4",
                            "eval.max_new_tokens=8", "checkpoint=none", f"hydra.run.dir={run}").returncode == 0
    return run


def test_the_embedded_world_gpt2_judges_a_real_run_with_its_chat_template(tiny_run):
    """world-gpt2 was never taught to score: its replies are whatever greedy decoding of the chat-
    templated rubric gives, worked out here with transformers directly, and read as the parser says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructune.world.source import WORLD_GPT2

    result = judge_run(tiny_run, str(WORLD_GPT2), batch_size=1)
    predictions = [json.loads(line) for line in (tiny_run / "predictions.jsonl").read_text().splitlines()]
    tok, model = AutoTokenizer.from_pretrained(WORLD_GPT2), AutoModelForCausalLM.from_pretrained(WORLD_GPT2)
    expected = []
    for p in predictions:
        chat = [{"role": "user", "content": book_prompt(p["instruction"], p["input"], p["reference"], p["tuned"])}]
        ids = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))["input_ids"][-(256 - 16):]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        expected.append(tok.decode(out[0, len(ids):], skip_special_tokens=True).strip())
    lines = _jsonl(result.scored_path)
    assert [line["raw"] for line in lines] == expected
    assert [line["score"] for line in lines] == [parse_score(raw) for raw in expected]
    assert [line["response"] for line in lines] == [p["tuned"] for p in predictions]
    parsed = [line["score"] for line in lines if line["score"] is not None]
    s = result.summary
    assert (s["n"], s["unparsable"], s["items"]) == (len(parsed), len(lines) - len(parsed), len(predictions))
    assert (s["mean"], s["low"], s["high"]) == (_cell(parsed) if parsed else (None, None, None))
    assert result.scored_path.name == "world-gpt2.jsonl"


def test_the_sweep_report_gets_a_judge_column_only_when_jobs_were_judged(server, tmp_path):
    from test_sweep_report import _predicted

    from instructune.sweep_report import write_report

    lora, ia3 = [[1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0]], [[1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 1, 0]]
    for num, (label, rows) in enumerate([("lora", lora), ("ia3", ia3)]):
        for seed, right in enumerate(rows, start=1):
            _predicted(tmp_path, 2 * num + seed - 1, [f"peft={label}", f"seed={seed}"], right, base=[0] * 6)
    jobs = sorted(tmp_path.glob("*_job"))
    judge_run(jobs[0], server.url, answer="base")  # the base answers judged: no column (it shows tuned ones)
    report = write_report(tmp_path).read_text()
    assert "| judge" not in report and "Judge:" not in report
    for job in jobs:
        judge_run(job, server.url)
    report = write_report(tmp_path).read_text()
    assert "| val loss | judge | trainable params |" in report
    # a right answer scores 100, a wrong one ("no idea") 20; seeds × items, the same items for both seeds
    for label, rows in (("lora", lora), ("ia3", ia3)):
        iv = arm_interval(np.array(rows) * 80 + 20)
        [row] = [line for line in report.splitlines() if line.startswith(f"| `peft={label}` | 2 | - |")]
        assert row.endswith(f"| - | {iv.mean:.1f} ({iv.low:.1f}–{iv.high:.1f}) | - | - | - | - | ok |")
    assert "- `tiny-judge`: `peft=lora` 2 of 2 seeds, 12 items; `peft=ia3` 2 of 2 seeds, 12 items." in report
