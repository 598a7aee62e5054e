
from instructune.batch import IGNORE_INDEX
from instructune.data.collate import CausalCollator, Seq2SeqCollator, collate_blocks, pack_blocks
from instructune.data.tokenize import TokenizedExample, tokenize_pairs

X = IGNORE_INDEX
EOS = 0


def _examples():
    # prompt [5, 6, 7] + response [8] + EOS ; prompt [9, 10] + response [11, 12] + EOS
    return [TokenizedExample([5, 6, 7, 8, EOS], 3), TokenizedExample([9, 10, 11, 12, EOS], 2),
            TokenizedExample([13, 14, EOS], 2)]


def test_masked_labels_pad_to_batch_longest_and_keep_first_eos_when_pad_is_eos():
    batch = CausalCollator(pad_id=EOS, masking=True)(_examples())
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, EOS, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
    # target j = token j+1; prompt targets masked; the EOS target kept although it equals the pad id
    assert batch["labels"].tolist() == [[X, X, 8, EOS], [X, 11, 12, EOS], [X, EOS, X, X]]
    assert batch["response_labels"].tolist() == batch["labels"].tolist()


def test_unmasked_labels_cover_the_whole_sequence_but_validation_targets_stay_response_only():
    batch = CausalCollator(pad_id=EOS, masking=False)(_examples())
    assert batch["labels"].tolist() == [[6, 7, 8, EOS], [10, 11, 12, EOS], [14, EOS, X, X]]
    assert batch["response_labels"].tolist() == [[X, X, 8, EOS], [X, 11, 12, EOS], [X, EOS, X, X]]


def test_pad_to_multiple_and_distinct_pad_id():
    batch = CausalCollator(pad_id=1, masking=True, pad_to_multiple_of=8)(_examples()[2:])
    assert batch["input_ids"].tolist() == [[13, 14, 1, 1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[X, EOS, X, X, X, X, X, X]]


def test_seq2seq_collation():
    examples = [TokenizedExample([5, 6, EOS], 3, [8, EOS]), TokenizedExample([9, EOS], 2, [11, 12, EOS])]
    batch = Seq2SeqCollator(pad_id=1)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, EOS], [9, EOS, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, EOS, X], [11, 12, EOS]]


def test_tokenize_keeps_the_seam_truncates_from_the_right_and_drops_empty_responses(word_tokenizer):
    examples, stats = tokenize_pairs(["what is the capital of france ?", "q : x", "q :"], ["paris", "y z", "a"],
                                     word_tokenizer, max_seq_length=5)
    # first: prompt (7 tokens) fills the window -> dropped; second: 3 + 2 + EOS = 6 -> cut to 5
    assert [e.input_ids for e in examples] == [[16, 15, 18, 19, 20], [16, 15, 17, 0]]
    assert [e.prompt_length for e in examples] == [3, 2]
    assert stats.dropped_empty_response == 1 and stats.truncated == 1 and stats.kept == 2


def test_seq2seq_tokenize(word_tokenizer):
    examples, stats = tokenize_pairs(["say hi"], ["hello"], word_tokenizer, 16, architecture="seq2seq")
    # the prompt feeds the encoder whole; the response and its EOS are the decoder's labels
    assert examples == [TokenizedExample([11, 12], 2, [13, 0])]
    assert (stats.kept, stats.dropped_empty_response, stats.truncated) == (1, 0, 0)


def test_pretraining_blocks_target_every_token():
    blocks = pack_blocks([[1, 2, 3, 0], [4, 5, 0]], block_size=3)
    # windows of block+1 tokens overlap by one: the last target of a block is the next block's first input
    assert blocks.tolist() == [[1, 2, 3, 0], [0, 4, 5, 0]]
    batch = collate_blocks(list(pack_blocks([[1, 2, 3, 4, 5, 6, 7, 0]], block_size=3)))
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert batch["labels"].tolist() == [[2, 3, 4], [5, 6, 7]]
