"""`instructune export <run> --format hf|onnx` on real (tiny) run folders: the hf folder loads with the
Auto classes and gives the tuned model's logits, the ONNX file gives PyTorch's logits under onnxruntime
on two batch shapes, strategies without mergeable weights are refused, and the model card's numbers
equal summary.json and bootstrap intervals computed here from predictions.jsonl."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import train_in_process

from instructune.bootstrap import arm_interval
from instructune.cli import main
from instructune.world.source import WORLD_GPT2

TINY = ["logger=none", "trainer.max_steps=5", "trainer.val_check_interval=5", "data.source.max_train_records=80",
        "eval.max_examples=8", "eval.max_new_tokens=12", "eval.selection_split=null", "checkpoint=none"]
HF_FILES = {"README.md", "chat_template.jinja", "config.json", "generation_config.json", "instructune.json",
            "model.safetensors", "prompt_style.json", "tokenizer.json", "tokenizer_config.json"}
ONNX_FILES = HF_FILES - {"model.safetensors", "instructune.json"} | {"model.onnx"}


def _train(tmp_path_factory, name: str, *overrides: str):
    run = tmp_path_factory.mktemp(name)
    assert train_in_process(*TINY, *overrides, f"hydra.run.dir={run}").returncode == 0
    return run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return _train(tmp_path_factory, "lora-run")


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    return _train(tmp_path_factory, "t5-run", "model=world-t5", "data.prompt.style=flan")


def _export(run, fmt: str, capsys) -> str:
    main(["export", str(run), "--format", fmt])
    return capsys.readouterr().out


def _error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return str(e.value.code)


def _predictions(run) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def _prompt_batch(run, tokenizer, n: int, side: str = "right") -> dict[str, torch.Tensor]:
    """The run's own test prompts (different lengths, so the batch is padded), formatted as it trained."""
    from instructune.data.prompts import PromptStyle

    style = PromptStyle.load(run / "model")
    tokenizer.padding_side = side
    prompts = [style.format(p["instruction"], p["input"]) for p in _predictions(run)[:n]]
    return dict(tokenizer(prompts, return_tensors="pt", padding=True))


@pytest.fixture(scope="module")
def hf_export(lora_run):
    main(["export", str(lora_run)])  # --format hf is the default
    return lora_run / "export" / "hf"


def test_hf_export_loads_with_auto_classes_and_gives_the_tuned_logits(lora_run, hf_export):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructune.data.prompts import PromptStyle
    from instructune.run_folder import load_tuned

    assert {p.name for p in hf_export.iterdir()} == HF_FILES  # no adapter_config.json / adapter weights
    model, tokenizer = AutoModelForCausalLM.from_pretrained(hf_export), AutoTokenizer.from_pretrained(hf_export)
    tuned = load_tuned(lora_run)
    assert tuned.meta["adapter_only"]  # the reference really is base + adapter, unmerged
    batch = _prompt_batch(lora_run, tokenizer, 3)
    assert batch["attention_mask"].min() == 0  # padded rows included
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, tuned.model(**batch).logits, atol=1e-5, rtol=1e-5)
    # what a vLLM-style loader reads: architecture and dtype in config.json, a chat template, stop ids
    config = json.loads((hf_export / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["dtype"] == "float32"
    assert tokenizer.chat_template == (WORLD_GPT2 / "chat_template.jinja").read_text()
    generation = json.loads((hf_export / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    # instructune reads it as a model folder: same prompt style, weights only
    again = load_tuned(hf_export)
    assert again.prompt_style == PromptStyle.load(lora_run / "model")
    assert again.meta == {"base_model": None, "architecture": "causal", "peft": "lora", "adapter_only": False,
                          "merged": True, "format": "instructions", "stop": []}


def test_hf_export_answers_like_the_run_with_a_plain_generate(lora_run, hf_export):
    """model.generate with nothing but the folder's generation config gives the run's own answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(hf_export), AutoTokenizer.from_pretrained(hf_export)
    batch = _prompt_batch(lora_run, tokenizer, 4, side="left")
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answers = [a.strip() for a in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert answers == [p["tuned"] for p in _predictions(lora_run)[:4]]


def test_a_second_export_never_overwrites_the_first(lora_run, hf_export, capsys):
    before = {p.name: p.read_bytes() for p in hf_export.iterdir()}
    out = _export(lora_run, "hf", capsys)
    second = lora_run / "export" / "hf-2"
    assert out == f"export written to {second} ({hf_export} holds an earlier export, left as it is)\n"
    assert {p.name: p.read_bytes() for p in hf_export.iterdir()} == before
    assert (second / "model.safetensors").read_bytes() == before["model.safetensors"]


def _item_scores(predictions: list[dict], who: str) -> tuple[list[float], list[float]]:
    """Exact match and ROUGE-L F1 of every item, computed here as the run defines them."""
    from torchmetrics.functional.text.rouge import rouge_score

    def norm(text: str) -> str:
        return " ".join(text.split())

    em = [float(norm(p[who]) == norm(p["reference"])) for p in predictions]
    rouge = [float(rouge_score(norm(p[who]), norm(p["reference"]), rouge_keys="rougeL")["rougeL_fmeasure"])
             for p in predictions]
    return em, rouge


def _cell(value: float, scores: list[float] | None) -> str:
    if scores is None:
        return f"{100 * value:.1f}%"
    interval = arm_interval([scores])
    return f"{100 * value:.1f}% [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _expected_rows(summary: dict, predictions: list[dict]) -> list[str]:
    scores = {who: _item_scores(predictions, who) for who in ("base", "tuned")}
    base, tuned = summary["eval"]["base"], summary["eval"]["tuned"]
    return [f"| exact match | {_cell(base['all'], scores['base'][0])} | {_cell(tuned['all'], scores['tuned'][0])} |",
            (f"| ROUGE-L F1 | {_cell(base['rougeL/all'], scores['base'][1])} | "
            f"{_cell(tuned['rougeL/all'], scores['tuned'][1])} |"),
            f"| chrF | {_cell(base['chrf/all'], None)} | {_cell(tuned['chrf/all'], None)} |"]


def test_model_card_front_matter_numbers_config_and_versions(lora_run, hf_export):
    summary = json.loads((lora_run / "summary.json").read_text())
    meta, body = _split_card((hf_export / "README.md").read_text())
    assert list(meta) == ["library_name", "base_model", "tags", "license", "pipeline_tag", "model-index"]
    assert (meta["library_name"], meta["base_model"], meta["license"], meta["pipeline_tag"]) == (
        "transformers", "world-gpt2", "Apache-2.0", "text-generation")
    assert meta["tags"] == ["instructune", "instruction-tuning", "lora"]
    [result] = meta["model-index"][0]["results"]
    assert result["dataset"] == {"name": "world", "type": "world", "split": "test"}
    tuned = summary["eval"]["tuned"]
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        "exact_match": tuned["all"], "rouge": tuned["rougeL/all"], "chrf": tuned["chrf/all"]}
    lines = body.splitlines()
    for row in _expected_rows(summary, _predictions(lora_run)):
        assert row in lines
    assert "| Base model | world-gpt2 (`asset:world-gpt2`) |" in lines
    assert "| Strategy | lora (r=8, alpha=16, dropout=0.05, target_modules=null); lora adapter merged into the base " \
           "weights |" in lines
    assert "| Loss masking | masking=true; loss.prompt_weight (λ) = 0.0 (null in the config, so decided by masking) |" \
           in lines
    assert f"| Steps | {summary['steps']} (lr {summary['lr']}, seed 42) |" in lines and summary["steps"] == 5
    assert f"Split `test`, n = {tuned['n']} items; greedy decoding, at most 12 new tokens." in lines
    assert "```yaml\n" + (lora_run / "config.yaml").read_text().rstrip() + "\n```" in body
    for name, version in summary["versions"].items():
        assert f"| {name} | {version} |" in lines


def test_model_card_intervals_on_a_run_with_hits(lora_run, tmp_path):
    """A copy of the run's results where three of the eight tuned answers are right (summary.json says
    so too): the exact-match interval is no longer [0, 0], and still the bootstrap of the items."""
    from instructune.model_card import ExportFacts, render

    for name in ("summary.json", "config.yaml"):
        shutil.copy(lora_run / name, tmp_path / name)
    predictions = _predictions(lora_run)
    for i in (0, 3, 5):
        predictions[i]["tuned"] = predictions[i]["reference"]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    em, rouge = _item_scores(predictions, "tuned")
    assert sum(em) == 3 and arm_interval([em]).low < 3 / 8 < arm_interval([em]).high
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["eval"]["tuned"]["all"], summary["eval"]["tuned"]["rougeL/all"] = float(np.mean(em)), float(np.mean(rouge))
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    _, body = _split_card(render(tmp_path, ExportFacts("hf", "causal", "lora", "merged")))
    rows = _expected_rows(summary, predictions)
    assert rows[0].split(" | ")[2].startswith("37.5% [")
    for row in rows:
        assert row in body.splitlines()


def _onnx_logits(path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]


def _dynamic_dims(path) -> dict[str, list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}


def test_onnx_world_base_matches_pytorch_on_two_batch_shapes(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime")
    pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructune.export import write_onnx

    write_onnx(tmp_path, AutoModelForCausalLM.from_pretrained(WORLD_GPT2))
    assert all(all(dims) for dims in _dynamic_dims(tmp_path / "model.onnx").values())  # symbolic batch, sequence
    reference = AutoModelForCausalLM.from_pretrained(WORLD_GPT2).eval()  # default attention, not the exported copy
    tokenizer = AutoTokenizer.from_pretrained(WORLD_GPT2)
    texts = ["the capital of france is", "a b", "what is the plural of mouse?", "one two three four five six seven"]
    shapes = set()
    for rows in (texts[:2], texts):
        batch = dict(tokenizer(rows, return_tensors="pt", padding=True))
        shapes.add(tuple(batch["input_ids"].shape))
        with torch.no_grad():
            expected = reference(**batch).logits.numpy()
        assert np.abs(_onnx_logits(tmp_path / "model.onnx", batch) - expected).max() < 1e-3
    assert len(shapes) == 2


def test_onnx_export_of_a_tuned_run(lora_run, capsys):
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime")
    pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    from instructune.run_folder import load_tuned

    out = _export(lora_run, "onnx", capsys)
    folder = lora_run / "export" / "onnx"
    assert out.startswith(f"export written to {folder}; onnxruntime logits within ")
    assert {p.name for p in folder.iterdir()} == ONNX_FILES
    tuned = load_tuned(lora_run)
    for n in (2, 5):
        batch = _prompt_batch(lora_run, tuned.tokenizer, n)
        with torch.no_grad():
            expected = tuned.model(**batch).logits.numpy()
        assert np.abs(_onnx_logits(folder / "model.onnx", batch) - expected).max() < 1e-3
    meta, body = _split_card((folder / "README.md").read_text())
    assert meta["library_name"] == "onnx" and meta["tags"][-1] == "onnx"
    assert "- No KV cache: each generation step runs the whole sequence again (simple and exact, slower for long " \
           "answers)." in body.splitlines()


@pytest.mark.slow
def test_seq2seq_exports_hf_and_onnx(t5_run, capsys):
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime")
    pytest.importorskip("onnxscript", reason="torch.onnx's dynamo exporter needs onnxscript")
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from instructune.run_folder import load_tuned
    from instructune.world.source import WORLD_T5

    _export(t5_run, "hf", capsys)
    hf = t5_run / "export" / "hf"
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(hf), AutoTokenizer.from_pretrained(hf)
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["T5ForConditionalGeneration"]
    assert tokenizer.chat_template == (WORLD_T5 / "chat_template.jinja").read_text()
    assert json.loads((hf / "generation_config.json").read_text())["decoder_start_token_id"] == \
        model.config.decoder_start_token_id
    tuned = load_tuned(t5_run)
    assert tuned.meta["adapter_only"]
    _export(t5_run, "onnx", capsys)
    for n, answer_length in ((2, 3), (4, 7)):
        batch = _prompt_batch(t5_run, tokenizer, n)
        batch["decoder_input_ids"] = torch.randint(0, model.config.vocab_size, (n, answer_length),
                                                   generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            expected = tuned.model(**batch).logits
            torch.testing.assert_close(model(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        assert np.abs(_onnx_logits(t5_run / "export" / "onnx" / "model.onnx", batch) - expected.numpy()).max() < 1e-3


def _saved_folder(tmp_path, strategy, peft: str, clear_stop_ids: bool = False):
    """A model folder as train.py's export writes it, for a strategy applied to the world base
    (``clear_stop_ids``: a model whose generation config names no eos / pad id, as many bases have)."""
    from instructune.data.prompts import make_prompt_style
    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.models.loading import load_model
    from instructune.run_folder import save_model_folder

    model = load_model(str(WORLD_GPT2), "causal")
    if strategy is not None:
        model = strategy.apply(model, "causal")
    if clear_stop_ids:
        model.generation_config.eos_token_id = model.generation_config.pad_token_id = None
    meta = {"base_model": str(WORLD_GPT2), "architecture": "causal", "peft": peft,
            "adapter_only": strategy is not None and strategy.adapter_only}
    return model, save_model_folder(tmp_path / "model", model, load_tokenizer(str(WORLD_GPT2)),
                                    make_prompt_style("alpaca"), meta)


@pytest.mark.parametrize("peft", ["prefix", "prompt"])
@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_virtual_token_strategies_are_refused_in_one_line(tmp_path, peft, fmt):
    from instructune.models.strategies import STRATEGIES

    _saved_folder(tmp_path, STRATEGIES[peft](num_virtual_tokens=4), peft)
    message = _error(["export", str(tmp_path), "--format", fmt])
    assert message == (f"error: {tmp_path}: peft={peft} adds virtual tokens that peft places before the prompt at "
                       "run time, which cannot be merged into weights; export needs a weights-only model (use the run "
                       "folder itself with instructune generate)")
    assert not (tmp_path / "export").exists()


def test_a_full_fine_tune_is_saved_as_it_is_and_its_card_says_what_is_missing(tmp_path, capsys):
    from safetensors.torch import load_file

    from instructune.models.strategies import Full

    _, saved_folder = _saved_folder(tmp_path, Full(), "full", clear_stop_ids=True)
    assert "eos_token_id" not in json.loads((saved_folder / "generation_config.json").read_text())
    assert _export(tmp_path / "model", "hf", capsys) == f"export written to {tmp_path / 'export' / 'hf'}\n"
    generation = json.loads((tmp_path / "export" / "hf" / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (0, 0)  # <|endoftext|>, the tokenizer's
    exported = load_file(tmp_path / "export" / "hf" / "model.safetensors")
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
    _, body = _split_card((tmp_path / "export" / "hf" / "README.md").read_text())
    assert "No scores recorded (summary.json has no eval results)." in body.splitlines()
    assert "| Strategy | full; full fine-tune, all weights saved as trained |" in body.splitlines()


def test_a_folder_that_is_no_run_is_one_line(tmp_path):
    assert _error(["export", str(tmp_path / "nowhere")]).startswith(
        f"error: {tmp_path / 'nowhere'}: no instructune.json here or in {tmp_path / 'nowhere' / 'model'}")
