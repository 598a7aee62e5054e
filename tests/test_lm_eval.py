"""`instructune lm-eval`: EleutherAI's harness on real (tiny) run folders, offline, with the embedded
world's task (src/instructune/world/lm_eval_tasks). Every score is recomputed here from the model's own
log-likelihoods (multiple choice: argmax over the choices of the summed log-prob of " <choice>") or its
own greedy continuations, so a number the harness got wrong, or a model it did not load as asked, fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import torch
from conftest import train_in_process

from instructune.cli import main
from instructune.world.benchmark import CAPITALS_FILE, capital_items
from instructune.models.loading import load_model
from instructune.run_folder import load_tuned
from instructune.world.facts import CAPITALS
from instructune.world.source import WORLD_GPT2

pytest.importorskip("lm_eval", reason="instructune lm-eval needs EleutherAI's harness: pip install lm-eval")

TINY_RUN = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "data.source.max_train_records=32",
            "eval.base=false", "eval.max_examples=2", "eval.max_new_tokens=2", "eval.selection_split=null",
            "checkpoint=none"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Models of a million parameters: one intra-op thread is as fast as two, and does not stall when
    other jobs share the CPU (two spinning threads made these tests ten times slower there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    """world-gpt2 + LoRA, 2 steps: the default configuration, a real run folder."""
    run = tmp_path_factory.mktemp("gpt2-lora")
    assert train_in_process(*TINY_RUN, f"hydra.run.dir={run}").returncode == 0
    return run


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("t5-lora")
    proc = train_in_process("model=world-t5", "data.prompt.style=flan", *TINY_RUN, f"hydra.run.dir={run}")
    assert proc.returncode == 0
    return run


def _lm_eval(*args: str, capsys) -> tuple[str, str]:
    """``instructune lm-eval ...`` in this process (the harness, the model and the datasets are the same as
    from the shell; a subprocess would only add seconds of imports). Returns (stdout, stderr)."""
    main(["lm-eval", *args])
    out = capsys.readouterr()
    return out.out, out.err


def _error(*args: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["lm-eval", *args])
    return str(exit_.value.code)


@torch.no_grad()
def _choice_logliks(model, tokenizer, architecture: str, context: str, choices: list[str],
                    sep: str = " ") -> list[float]:
    """log P(sep + choice | context) summed over the choice's tokens, one unpadded forward pass each. Causal:
    the tokens of context + sep + choice after the context's own tokens (a virtual-token adapter's extra
    leading logits are skipped); seq2seq: sep + choice as the decoder's target, the context as its input."""
    lls = []
    for choice in choices:
        ctx = tokenizer(context).input_ids
        if architecture == "causal":
            whole = tokenizer(context + sep + choice).input_ids
            assert whole[: len(ctx)] == ctx  # the boundary is a token boundary
            logits = model(input_ids=torch.tensor([whole])).logits[0, -len(whole):]
            logp = torch.log_softmax(logits.float(), -1)
            lls.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        else:
            target = tokenizer(sep + choice).input_ids
            logp = torch.log_softmax(model(input_ids=torch.tensor([ctx]), labels=torch.tensor([target])).logits[0], -1)
            lls.append(sum(logp[i, t].item() for i, t in enumerate(target)))
    return lls


def _expected_mc(model, tokenizer, architecture: str, n: int) -> tuple[float, float, list[list[float]]]:
    """acc and acc_norm (log-likelihood per character of the choice) over the first n items, and the
    log-likelihoods themselves."""
    items = capital_items()[:n]
    lls = [_choice_logliks(model, tokenizer, architecture, f"The capital of {it['country']} is", it["choices"])
           for it in items]
    acc = [max(range(4), key=lambda j: ll[j]) == it["answer"] for ll, it in zip(lls, items)]
    norm = [max(range(4), key=lambda j: ll[j] / len(it["choices"][j])) == it["answer"] for ll, it in zip(lls, items)]
    return sum(acc) / n, sum(norm) / n, lls


@torch.no_grad()
def _greedy(model, tokenizer, prompt: str, max_new_tokens: int = 8) -> str:
    """The continuation the generation task scores: greedy, no cache, cut at '.' or a new line, lstripped."""
    ids = tokenizer(prompt).input_ids
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).split(".")[0].split("\n")[0].lstrip()


def _flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def _samples(path) -> dict[str, list[dict]]:
    rows = [json.loads(line) for line in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    by_task: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["doc_id"]):
        by_task.setdefault(row["task"], []).append(row)
    return by_task


def test_world_capitals_file_holds_the_worlds_facts():
    items = [json.loads(line) for line in CAPITALS_FILE.read_text().splitlines()]
    assert items == capital_items()  # the committed file is what write_capitals_file writes
    assert [(it["country"], it["choices"][it["answer"]]) for it in items] == list(CAPITALS.items())
    assert [it["answer"] for it in items] == [i % 4 for i in range(len(CAPITALS))]
    assert all(len(set(it["choices"])) == 4 and set(it["choices"]) <= set(CAPITALS.values()) for it in items)


def test_lora_run_scores_equal_its_own_loglikelihoods(gpt2_run, capsys):
    """The command as typed (a subprocess, offline), then every number against the tuned model."""
    proc = subprocess.run([sys.executable, "-m", "instructune.cli", "lm-eval", str(gpt2_run), "--tasks",
                           "world_capitals,world_capitals_gen", "--limit", "6", "--log-samples"],
                          cwd=gpt2_run, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = gpt2_run / "lm_eval" / "world_capitals+world_capitals_gen.json"
    result = json.loads(out.read_text())
    scores = result["results"]
    tuned = load_tuned(gpt2_run)
    acc, acc_norm, lls = _expected_mc(tuned.model, tuned.tokenizer, "causal", 6)
    assert scores["world_capitals"]["acc,none"] == acc and scores["world_capitals"]["acc_norm,none"] == acc_norm
    samples = _samples(out)
    got = [float(r[0]) for s in samples["world_capitals"] for r in s["filtered_resps"]]
    assert got == pytest.approx(_flat(lls), abs=1e-4)
    answers = [_greedy(tuned.model, tuned.tokenizer, f"The capital of {it['country']} is")
               for it in capital_items()[:6]]
    assert [s["filtered_resps"][0] for s in samples["world_capitals_gen"]] == answers
    assert scores["world_capitals_gen"]["exact_match,strip"] == sum(
        a == it["capital"] for a, it in zip(answers, capital_items())) / 6
    assert proc.stdout.splitlines() == [
        f"world_capitals: acc {acc:.4f} ± {scores['world_capitals']['acc_stderr,none']:.4f} (n=6)",
        (f"world_capitals_gen: exact_match [strip] {scores['world_capitals_gen']['exact_match,strip']:.4f} "
         f"± {scores['world_capitals_gen']['exact_match_stderr,strip']:.4f} (n=6)"),
        f"written to {out}"]
    ours = result["instructune"]  # the run's side, under a key of its own
    assert ours["model"] == {"run": str(gpt2_run), "model_dir": str(gpt2_run / "model"), "architecture": "causal",
                             "peft": "lora", "adapter_only": True, "base_model": "asset:world-gpt2",
                             "prompt_style": "alpaca", "evaluated": "tuned", "merged": False}
    assert ours["options"]["limit"] == 6 and ours["options"]["tasks"] == ["world_capitals", "world_capitals_gen"]
    assert result["n-samples"]["world_capitals"] == {"original": 40, "effective": 6}
    assert ours["packages"]["lm_eval"] == metadata.version("lm_eval") and ours["packages"]["torch"] == torch.__version__
    assert result["versions"] == {"world_capitals": 1.0, "world_capitals_gen": 1.0}  # lm-eval's own keys, intact

    # the base, from the same run folder: its own weights, its own numbers, a file of its own
    stdout, _ = _lm_eval(str(gpt2_run), "--tasks", "world_capitals", "--limit", "6", "--base", "--log-samples",
                         capsys=capsys)
    base_out = gpt2_run / "lm_eval" / "world_capitals-base.json"
    assert stdout.splitlines()[-1] == f"written to {base_out}"
    base = json.loads(base_out.read_text())
    assert base["instructune"]["model"]["evaluated"] == "base"
    acc, acc_norm, base_lls = _expected_mc(load_model(str(WORLD_GPT2)).eval(), tuned.tokenizer, "causal", 6)
    assert base["results"]["world_capitals"]["acc,none"] == acc
    assert base["results"]["world_capitals"]["acc_norm,none"] == acc_norm
    got = [float(r[0]) for s in _samples(base_out)["world_capitals"] for r in s["filtered_resps"]]
    assert got == pytest.approx(_flat(base_lls), abs=1e-4)
    assert got != pytest.approx(_flat(lls), abs=1e-4)  # the adapter moved them: the base really was the base


def test_seq2seq_run_merged_and_a_task_of_ones_own(t5_run, tmp_path, capsys):
    """world-t5 + LoRA, merged first (the seq2seq backend, a non-trivial accuracy), next to a task YAML from
    --include-path on its own local JSON file (lm-eval's `dataset_path: json` route)."""
    data = tmp_path / "three.jsonl"
    items = capital_items()[10:13]
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "three_capitals.yaml").write_text(
        "task: three_capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: 'The capital of {{country}} is'\ndoc_to_choice: choices\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n")
    stdout, _ = _lm_eval(str(t5_run / "model"), "--tasks", "world_capitals,three_capitals", "--limit", "12",
                         "--merge", "--include-path", str(tmp_path / "tasks"), "--batch-size", "5", capsys=capsys)
    out = t5_run / "lm_eval" / "world_capitals+three_capitals-merged.json"  # beside model/, in the run folder
    assert stdout.splitlines()[-1] == f"written to {out}"
    result = json.loads(out.read_text())
    model = result["instructune"]["model"]
    assert (model["merged"], model["architecture"], model["model_dir"]) == (True, "seq2seq", str(t5_run / "model"))
    tuned = load_tuned(t5_run)  # the adapter, unmerged: merging must not change the answers
    acc, acc_norm, _ = _expected_mc(tuned.model, tuned.tokenizer, "seq2seq", 12)
    assert 0 < acc < 1  # the world's T5 does not know every capital: the check can tell right from wrong
    assert result["results"]["world_capitals"]["acc,none"] == acc
    assert result["results"]["world_capitals"]["acc_norm,none"] == acc_norm
    lls = [_choice_logliks(tuned.model, tuned.tokenizer, "seq2seq", f"The capital of {it['country']} is",
                           it["choices"]) for it in items]
    own = sum(max(range(4), key=lambda j: ll[j]) == it["answer"] for ll, it in zip(lls, items)) / 3
    assert result["results"]["three_capitals"]["acc,none"] == own
    assert result["n-samples"]["three_capitals"]["effective"] == 3

    # never overwrite: the same command again writes a second file
    _lm_eval(str(t5_run), "--tasks", "three_capitals", "--limit", "1", "--include-path", str(tmp_path / "tasks"),
             capsys=capsys)
    _lm_eval(str(t5_run), "--tasks", "three_capitals", "--limit", "2", "--include-path", str(tmp_path / "tasks"),
             capsys=capsys)
    first, second = (json.loads((t5_run / "lm_eval" / name).read_text())
                     for name in ("three_capitals.json", "three_capitals-2.json"))
    assert [r["instructune"]["options"]["limit"] for r in (first, second)] == [1, 2]


def test_chat_template_and_virtual_tokens(tmp_path, capsys):
    """A prompt-tuning model folder (untrained virtual tokens, saved as a run exports it): log-likelihoods
    through peft's forward, equal to ours; generation refused in one line; --apply-chat-template wraps the
    context in the folder's tokenizer template."""
    from instructune.data.prompts import make_prompt_style
    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.models.strategies import STRATEGIES
    from instructune.run_folder import save_model_folder

    torch.manual_seed(0)
    model = STRATEGIES["prompt"](num_virtual_tokens=4).apply(load_model(str(WORLD_GPT2)), "causal")
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    folder = save_model_folder(tmp_path / "run" / "model", model, tokenizer, make_prompt_style("chat"),
                               {"base_model": str(WORLD_GPT2), "architecture": "causal", "peft": "prompt",
                                "adapter_only": True})
    _lm_eval(str(folder), "--tasks", "world_capitals", "--limit", "4", "--log-samples", "--apply-chat-template",
             capsys=capsys)
    out = tmp_path / "run" / "lm_eval" / "world_capitals.json"
    rows = _samples(out)["world_capitals"]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "The capital of France is"}],
                                         add_generation_prompt=True, tokenize=False)
    assert rows[0]["arguments"][0][0] == chat
    assert json.loads(out.read_text())["instructune"]["options"]["apply_chat_template"] is True
    tuned = load_tuned(folder)
    for row, item in zip(rows, capital_items()):
        # lm-eval moves a context's trailing whitespace (here the template's new line) into the continuation
        context = chat.replace("France", item["country"])
        ours = _choice_logliks(tuned.model, tuned.tokenizer, "causal", context.rstrip("\n"), item["choices"], sep="\n")
        assert [float(r[0]) for r in row["filtered_resps"]] == pytest.approx(ours, abs=1e-4)
    error = _error(str(folder), "--tasks", "world_capitals_gen", "--limit", "1", capsys=capsys)
    assert error.startswith("error: peft=prompt: generation tasks need peft's generate") and "\n" not in error


def test_errors_are_one_line(gpt2_run, tmp_path, capsys):
    error = _error(str(gpt2_run), "--tasks", "world_capital", capsys=capsys)
    assert error == ("error: --tasks: unknown lm-eval task 'world_capital'; "
                     "did you mean world_capitals, world_capitals_gen?")
    assert _error(str(tmp_path), "--tasks", "world_capitals", capsys=capsys) == (
        f"error: {tmp_path}: no instructune.json here or in {tmp_path / 'model'}; is this an instructune run folder?")
    assert "--limit=0" in _error(str(gpt2_run), "--tasks", "world_capitals", "--limit", "0", capsys=capsys)
    assert "no such folder" in _error(str(gpt2_run), "--tasks", "world_capitals", "--include-path",
                                      str(tmp_path / "nope"), capsys=capsys)
    assert not (gpt2_run / "lm_eval" / "world_capital.json").exists()
