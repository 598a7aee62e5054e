import pytest
import torch

from instructune.data.tokenizer_loading import load_tokenizer
from instructune.eval.generate import generate
from instructune.eval.metrics import exact_match, grouped_exact_match, normalize
from instructune.models.loading import load_model
from instructune.models.strategies import STRATEGIES
from instructune.world.source import WORLD_GPT2, WORLD_T5

# Varied lengths (1 to 9 words) and 32 new tokens: left padding of 0 to 8 positions in a batch, enough
# steps for misaligned positions or a re-injected prompt to show.
PROMPTS = ["The capital of France is", "One cat, two", "The opposite of hot is", "Backwards, tree becomes",
           "Cats", "In the morning the small dog and the big cat walk to the river and"]
T5_PROMPTS = ["say hi", "what is the capital of france ?", "q : x y z", "paris", "what is the capital of paris ? "
              "answer : france is the capital", "hi hi hi"]
VIRTUAL = {"num_virtual_tokens": 4}


def _peft(strategy: str, folder, architecture: str = "causal"):
    torch.manual_seed(0)
    params = VIRTUAL if strategy in ("prompt", "prefix") else {}
    return STRATEGIES[strategy](**params).apply(load_model(str(folder), architecture), architecture)


def _reference_greedy(model, tokenizer, prompt: str, architecture: str, max_new_tokens: int) -> str:
    """Greedy decoding without any cache or padding: the whole sequence through the peft model's own
    training forward at every step, so this is by construction what training optimised."""
    model.eval()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if architecture == "causal":
                seq = torch.cat([ids, torch.tensor([new], dtype=torch.long)], dim=1)
                logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
            else:
                start = model.get_base_model().config.decoder_start_token_id
                dec = torch.tensor([[start, *new]])
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("strategy", ["lora", "prompt", "prefix"])
def test_batched_left_padded_generation_equals_one_by_one(strategy):
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    model = _peft(strategy, WORLD_GPT2)
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=32, batch_size=6)
    single = [generate(model, tokenizer, [p], max_new_tokens=32)[0] for p in PROMPTS]
    assert batched == single and all(batched)  # equal, and not vacuously (no empty answer)
    assert tokenizer.padding_side == "right"  # restored for training
    if strategy == "lora":  # LoRA's B starts at zero: the untrained adapter answers exactly as the base does
        base = load_model(str(WORLD_GPT2))
        assert batched == [generate(base, tokenizer, [p], max_new_tokens=32)[0] for p in PROMPTS]
        assert batched[0].startswith("Paris.")


@pytest.mark.parametrize(("strategy", "architecture"), [("prompt", "causal"), ("prefix", "causal"),
                                                        ("prompt", "seq2seq"), ("prefix", "seq2seq")])
def test_virtual_token_generation_is_what_training_computes(strategy, architecture):
    """Cached, batched generation equals greedy decoding through the training forward, token for token."""
    folder = WORLD_GPT2 if architecture == "causal" else WORLD_T5
    prompts = PROMPTS if architecture == "causal" else T5_PROMPTS
    tokenizer = load_tokenizer(str(folder))
    model = _peft(strategy, folder, architecture)
    batched = generate(model, tokenizer, prompts, architecture, max_new_tokens=24, batch_size=6)
    assert batched == [_reference_greedy(model, tokenizer, p, architecture, 24) for p in prompts]


@pytest.mark.parametrize("strategy", ["prompt", "prefix"])
@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_virtual_token_generation_uses_the_kv_cache(architecture, strategy):
    """Only the first forward call reads the prompt (with its virtual tokens); every later one reads one
    new token against the cache. A re-injected prompt or a dropped cache shows as wider inputs."""
    folder = WORLD_GPT2 if architecture == "causal" else WORLD_T5
    tokenizer = load_tokenizer(str(folder))
    model = _peft(strategy, folder, architecture)
    calls: list[tuple[int, int]] = []  # (prompt positions read, decoder positions read)

    def record(_module, args, kwargs):
        embeds, ids, dec = kwargs.get("inputs_embeds"), kwargs.get("input_ids"), kwargs.get("decoder_input_ids")
        prompt = embeds.shape[1] if embeds is not None else 0
        if architecture == "causal":
            calls.append((prompt, ids.shape[1] if ids is not None else 0))
        else:
            calls.append((prompt + (ids.shape[1] if ids is not None else 0), dec.shape[1]))

    handle = model.get_base_model().register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate(model, tokenizer, PROMPTS if architecture == "causal" else T5_PROMPTS, architecture,
                 max_new_tokens=12, batch_size=6)
    finally:
        handle.remove()
    widest = max(len(tokenizer(p)["input_ids"]) for p in (PROMPTS if architecture == "causal" else T5_PROMPTS))
    # prompt tuning reads its virtual tokens as inputs; prefix tuning has them in the cache already
    read = widest + (VIRTUAL["num_virtual_tokens"] if strategy == "prompt" else 0)
    first = (read, 0) if architecture == "causal" else (read, 1)
    if architecture == "causal" and strategy == "prefix":
        first = (0, widest)
    # one forward per new token: at least one answer runs the whole 12 tokens (none stops at EOS early)
    assert calls == [first] + [(0, 1)] * 11


@pytest.mark.parametrize(("strategy", "architecture"), [("prompt", "causal"), ("prefix", "causal"),
                                                        ("prompt", "seq2seq"), ("prefix", "seq2seq")])
def test_trained_virtual_tokens_change_what_the_model_generates(strategy, architecture):
    """Train the virtual tokens to give one fixed answer, then generate: the answer comes out (batched
    with other prompts), and it is not what the base model says. A strategy whose prefix or prompt is
    lost in generation would print the base model's answer."""
    folder = WORLD_GPT2 if architecture == "causal" else WORLD_T5
    tokenizer = load_tokenizer(str(folder))
    prompt, target = "The capital of France is", "the plural of cat is cats"
    base_answer = generate(load_model(str(folder), architecture), tokenizer, [prompt], architecture, 12)[0]
    assert base_answer != target
    model = _peft(strategy, folder, architecture)
    p_ids = tokenizer(prompt)["input_ids"]
    t_ids = tokenizer(target)["input_ids"] + [tokenizer.eos_token_id]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-1)
    model.train()
    for _ in range(150):
        if architecture == "causal":
            ids = torch.tensor([p_ids + t_ids])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
            loss = torch.nn.functional.cross_entropy(logits[0, len(p_ids) - 1 : -1], torch.tensor(t_ids))
        else:
            ids, labels = torch.tensor([p_ids]), torch.tensor([t_ids])
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    others = PROMPTS[1:] if architecture == "causal" else T5_PROMPTS
    answers = generate(model, tokenizer, [*others[:3], prompt, *others[3:5]], architecture, 12, batch_size=6)
    assert answers[3] == target


def test_the_base_model_knows_its_world():
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    answers = generate(load_model(str(WORLD_GPT2)), tokenizer, ["The capital of France is"], max_new_tokens=2)
    assert answers[0].startswith("Paris")


@pytest.mark.parametrize("strategy", ["lora", "ia3", "prompt", "prefix"])
def test_seq2seq_generation_batched_equals_one_by_one(tiny_dirs, strategy):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(tiny_dirs["t5"]))
    params = {"num_virtual_tokens": 3} if strategy in ("prompt", "prefix") else {}
    model = STRATEGIES[strategy](**params).apply(load_model(str(tiny_dirs["t5"]), "seq2seq"), "seq2seq")
    batched = generate(model, tokenizer, T5_PROMPTS, "seq2seq", max_new_tokens=32, batch_size=6)
    single = [generate(model, tokenizer, [p], "seq2seq", max_new_tokens=32)[0] for p in T5_PROMPTS]
    assert batched == single and len(batched) == 6


def test_exact_match_normalisation_and_groups():
    assert normalize("  Paris \n") == "Paris" and exact_match("the  ball was\nkicked ", "the ball was kicked")
    assert not exact_match("Paris.", "Paris")
    # case is part of the answer: the world's uppercase task fails with a lower-case answer
    assert not exact_match("the ball was kicked", "THE BALL WAS KICKED") and not exact_match("paris", "Paris")
    scores = grouped_exact_match(["a", "b", "c"], ["a", "x", "c"], ["t1", "t1", "t2"], seen_tasks={"t1"})
    assert scores == {"all": 2 / 3, "seen": 0.5, "held_out": 1.0, "task/t1": 0.5, "task/t2": 1.0, "n": 3}


def test_generation_scores_add_rouge_and_chrf_per_group():
    from instructune.eval.metrics import generation_scores

    scores = generation_scores(["the ball was kicked", "Paris"], ["the ball was kicked by the boy", "Paris"],
                               ["passive", "country_of_capital"], seen_tasks={"passive"})
    assert scores["all"] == 0.5 and scores["seen"] == 0.0 and scores["held_out"] == 1.0
    # ROUGE-L F1: 4 common words of 4 and 7 -> 2*1*(4/7)/(1+4/7) = 8/11
    assert scores["rougeL/seen"] == pytest.approx(8 / 11, abs=1e-4)
    assert scores["rougeL/held_out"] == pytest.approx(1.0)
    assert scores["rougeL/all"] == pytest.approx((8 / 11 + 1) / 2, abs=1e-4)
    # chrF (torchmetrics' chrF++: beta 2, character 1- to 6-grams and word 1- to 2-grams, whitespace dropped) is
    # the mean over those 8 orders of each order's F2 score. "the ball was kicked" is a prefix of the
    # reference's characters, so every n-gram of it matches (precision 1): character recall (17-n)/(25-n),
    # word recall 4/7 and 3/6. "paris" has no 6-gram and no word bigram: 6 of 8 orders score 1.
    f2 = lambda recall: 5 * recall / (4 + recall)  # noqa: E731  (precision 1)
    seen = [f2((17 - n) / (25 - n)) for n in range(1, 7)] + [f2(4 / 7), f2(3 / 6)]
    assert scores["chrf/seen"] == pytest.approx(sum(seen) / 8, abs=1e-6)
    assert scores["chrf/held_out"] == 0.75
    # corpus level: n-gram counts summed over both examples before scoring
    both = [f2((17 - n + max(6 - n, 0)) / (25 - n + max(6 - n, 0))) for n in range(1, 7)] + [f2(5 / 8), f2(3 / 6)]
    assert scores["chrf/all"] == pytest.approx(sum(both) / 8, abs=1e-6)
