"""Words (attn/words.py): SentencePiece pieces grouped into the words a reader sees, and
attention summed per word without losing or inventing weight."""

from __future__ import annotations

import numpy as np
import pytest

from attn import inference, words

from helpers import THIRSTY


@pytest.fixture(scope="module")
def thirsty_tokens(gemma_tokenizer):
    ids, tokens, spans = inference.encode(gemma_tokenizer, THIRSTY)
    return tokens, spans


def test_jide_is_one_word(thirsty_tokens):
    tokens, _ = thirsty_tokens
    assert tokens[1:3] == ["J", "ide"]  # two pieces to the model
    assert words.labels(tokens, words.groups(tokens)) == [
        "<BOS>", "Jide", " was", " thirsty", " so", " she", " went", " looking", " for"]


def test_a_word_s_weight_is_the_sum_of_its_pieces_weights(gemma3_26):
    analysis = inference.analyze(gemma3_26, THIRSTY)
    word_of = words.groups(analysis.tokens)
    merged = words.merge(analysis.last_row, word_of)  # (layers, heads, words)
    assert merged.shape == analysis.last_row.shape[:2] + (9,) and merged.dtype == np.float32
    np.testing.assert_allclose(merged[..., 1], analysis.last_row[..., 1] + analysis.last_row[..., 2], atol=1e-7)
    np.testing.assert_array_equal(merged[..., 0], analysis.last_row[..., 0])  # <BOS> alone
    np.testing.assert_allclose(merged[..., 2:], analysis.last_row[..., 3:], atol=1e-7)


def test_a_merged_row_sums_to_one(gemma3_26):
    analysis = inference.analyze(gemma3_26, "Jide's friend, Tobi, wasn't thirsty.\nShe went looking for water")
    merged = words.merge(analysis.last_row, words.groups(analysis.tokens))
    assert merged.shape[-1] < analysis.num_tokens
    np.testing.assert_allclose(merged.sum(axis=-1), 1, atol=1e-5)


@pytest.mark.parametrize("tokens, expected", [
    (["<BOS>", "J", "ide", " was"], ["<BOS>", "Jide", " was"]),
    (["<BOS>", " don", "'", "t", "."], ["<BOS>", " don", "'t", "."]),
    (["<BOS>", "end", "\n", "\n\n", "Next"], ["<BOS>", "end", "\n", "\n\n", "Next"]),
    (["<BOS>", " (", "see", ")", " it"], ["<BOS>", " (see", ")", " it"]),
    (["<BOS>", "<BOS>", "x"], ["<BOS>", "<BOS>x"]),  # typed "<BOS>" text is an ordinary word
], ids=["pieces-join", "punctuation-starts-a-word", "newlines-alone", "brackets", "typed-bos"])
def test_spaces_punctuation_newlines_and_bos_start_words(tokens, expected):
    assert words.labels(tokens, words.groups(tokens)) == expected


def test_word_spans_tile_the_prompt(thirsty_tokens):
    tokens, spans = thirsty_tokens
    word_of = words.groups(tokens)
    word_spans = words.spans(spans, word_of)
    assert [THIRSTY[a:b] for a, b in word_spans] == ["", "Jide", " was", " thirsty", " so", " she", " went",
                                                     " looking", " for"]


def test_merge_refuses_weights_that_do_not_match_the_tokens():
    with pytest.raises(ValueError, match="3 weights for 2 tokens"):
        words.merge(np.ones(3), np.array([0, 1]))
