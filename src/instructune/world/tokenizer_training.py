"""Train the embedded world's byte-level BPE tokenizer with the ``tokenizers`` library.

Spaces before words: the byte-level pre-tokenizer adds a prefix space to every separately tokenised
text *and to every line* (text is split at line breaks first). So an answer word tokenises the same
after ``### Response:\\n`` (the response is tokenised on its own) and an input word the same after
``### Input:\\n`` as in the middle of a pretraining sentence (`` Paris``, one token). The decoder
removes the spaces it added around line breaks.

Only the build tool (``tools/build_world.py``) trains one; runs load the committed tokenizer through
``instructune.data.tokenizer_loading.load_tokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable

EOS = "<|endoftext|>"
# The chat template the world tokenizer ships with, so ``prompt=chat`` works offline (Phi-3 layout).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> object:
    """Return a ``PreTrainedTokenizerFast`` (pad = EOS, as GPT-2) trained on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=True)]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(" \n", "\n"), decoders.Replace("\n ", "\n")])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=EOS, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast
