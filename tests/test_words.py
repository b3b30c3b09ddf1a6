"""Words (attn/views/words.py): SentencePiece pieces grouped into the words a reader sees, and
attention summed per word without losing or inventing weight."""

from __future__ import annotations

import dataclasses
import html
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attn.compute import forward as inference
from attn.compute import generation
from attn.compute.analysis import Analysis, TokenProb
from attn.views import words
from attn.views.diagram import line_svg
from attn.views.heatmap import heatmap_html
from attn.views.highlight import token_html
from attn.views.view import View, available_measures, row
from helpers import THIRSTY, audit_html


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


# ---- a whole analysis over words (words.merged) ------------------------------------------------

SPLIT = "Jide's friend Adebayo, unbelievably, wasn't thirsty.\nShe went looking for"


@pytest.fixture(scope="module")
def split(gemma3_26):
    """Many words of several pieces, all pairs kept, every measure (a random model's weights)."""
    analysis = inference.analyze(gemma3_26, SPLIT)
    assert analysis.full is not None and analysis.value_norms is not None and analysis.rollout is not None
    return analysis


@pytest.fixture(scope="module")
def thirsty(bundled):
    return inference.analyze(bundled, THIRSTY)


def pieces_of(analysis) -> list[list[int]]:
    """The token indices of each word, in order."""
    word_of = words.groups(analysis.tokens, analysis.generated_from)
    return [np.flatnonzero(word_of == w).tolist() for w in range(int(word_of[-1]) + 1)]


def test_jide_is_one_word_of_the_analysis(thirsty):
    merged = words.merged(thirsty)
    assert merged.tokens == ["<BOS>", "Jide", " was", " thirsty", " so", " she", " went", " looking", " for"]
    assert merged.words and not thirsty.words
    assert merged.token_ids[1] == thirsty.token_ids[1]  # "Jide" keeps its first piece's id, "J"
    assert (merged.next_token, merged.next_token_id, merged.top_k) == (
        thirsty.next_token, thirsty.next_token_id, thirsty.top_k)
    assert merged.logit_lens == thirsty.logit_lens
    assert merged.to_json()["words"] is True and "words" not in thirsty.to_json()


def test_a_word_weighs_what_its_pieces_weigh_in_every_layer_head_and_measure(split):
    merged = words.merged(split)
    groups = pieces_of(split)
    assert merged.num_tokens == len(groups) < split.num_tokens
    for measure in available_measures(split):
        for layer in range(split.num_layers):
            for head in ["mean", *range(split.num_heads)]:
                view = View(layer=layer, head=head, measure=measure)
                pieces, whole = row(split, view), row(merged, view)
                np.testing.assert_allclose(whole, [pieces[g].sum() for g in groups], atol=1e-6)


def test_merged_rows_sum_to_what_they_summed_to(split):
    merged = words.merged(split)
    np.testing.assert_allclose(merged.last_row.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(merged.rollout.sum(), 1, atol=1e-5)
    np.testing.assert_allclose(merged.value_norms.sum(-1), split.value_norms.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(merged.full.astype(np.float64).sum(-1), 1, atol=2e-3)  # float16


def test_all_pairs_rows_are_each_word_s_last_piece_with_keys_summed(split):
    """The last piece is where the word is complete: its row is the word's row."""
    merged = words.merged(split)
    groups = pieces_of(split)
    full = split.full.astype(np.float64)
    for w, pieces in enumerate(groups):
        expected = np.stack([full[:, :, pieces[-1], g].sum(-1) for g in groups], axis=-1)
        np.testing.assert_allclose(merged.full[:, :, w].astype(np.float64), expected, atol=2e-3)
    assert not np.triu(merged.full.astype(np.float64), k=1).any()  # still causal


def test_word_spans_tile_the_prompt_of_the_analysis(split):
    merged = words.merged(split)
    assert "".join(split.prompt[a:b] for a, b in merged.spans) == split.prompt
    assert [split.prompt[a:b] for a, b in merged.spans[1:]] == merged.tokens[1:]


def test_merging_twice_changes_nothing(split):
    merged = words.merged(split)
    assert words.merged(merged) is merged


def test_a_prompt_of_whole_words_keeps_its_numbers(bundled):
    analysis = inference.analyze(bundled, "The cat sat on the mat")
    merged = words.merged(analysis)
    assert merged.tokens == analysis.tokens and merged.words
    assert merged.last_row is analysis.last_row  # nothing to sum: nothing copied


def hand_made(tokens: list[str], generated_from: int | None) -> Analysis:
    rng = np.random.default_rng(0)
    weights = rng.random((1, 2, len(tokens))).astype(np.float32)
    ends = np.cumsum([0] + [len(t) for t in tokens[1:]]).tolist()
    return Analysis(
        model="made-up", model_source="test", dtype="float32", prompt="".join(tokens[1:]), tokens=tokens,
        token_ids=np.arange(len(tokens), dtype=np.int64), spans=[(0, 0)] + list(zip(ends[:-1], ends[1:])),
        next_token="!", next_token_id=99, top_k=[TokenProb("!", 99, 0.5)], layer_types=["global"],
        sliding_window=None, num_heads=2, last_row=weights / weights.sum(-1, keepdims=True), full=None,
        generated_from=generated_from,
    )


def test_generated_from_counts_words():
    step = hand_made(["<BOS>", "J", "ide", " was", " thirsty", " so", "oo"], generated_from=5)
    merged = words.merged(step)
    assert merged.tokens == ["<BOS>", "Jide", " was", " thirsty", " sooo"]
    assert merged.generated_from == 4 and merged.tokens[merged.generated_from:] == [" sooo"]


def test_a_generated_piece_never_joins_a_typed_word():
    """Typed "thir", generated "sty": the model wrote only the second, so it stays apart."""
    merged = words.merged(hand_made(["<BOS>", "J", "ide", " thir", "sty"], generated_from=4))
    assert merged.tokens == ["<BOS>", "Jide", " thir", "sty"] and merged.generated_from == 3


def test_a_step_with_nothing_generated_yet_has_no_generated_word():
    merged = words.merged(hand_made(["<BOS>", "J", "ide"], generated_from=3))
    assert merged.tokens == ["<BOS>", "Jide"] and merged.generated_from == 2 == merged.num_tokens


def test_a_generation_step_merges(bundled):
    gen = generation.generate(bundled, THIRSTY, 3)
    step = gen.step_analysis(2)  # <BOS> J ide ... for + two generated tokens
    merged = words.merged(step)
    assert merged.tokens[1] == "Jide" and merged.num_tokens == step.num_tokens - 1
    assert merged.generated_from == step.generated_from - 1
    assert merged.tokens[merged.generated_from:] == step.tokens[step.generated_from:]
    np.testing.assert_allclose(merged.value_norms[..., 1], step.value_norms[..., 1:3].sum(-1), rtol=1e-6)


# ---- the views draw words ------------------------------------------------------------------------


def test_the_line_diagram_labels_words(thirsty):
    svg = line_svg(words.merged(thirsty), View(layer=5, show_all=True)).data
    labels = [el.text for el in ET.fromstring(svg).iter() if el.tag.endswith("text")]
    assert "Jide" in labels and "J" not in labels and "ide" not in labels


def shown_tokens(fragment: str) -> list[tuple[int, str]]:
    """(position, text) of each token of the highlighted view, <BOS> first, as a reader sees it."""
    audit_html(fragment)
    found = re.findall(r'<span class="attn-tok[^"]*" data-pos="(\d+)"[^>]*>(.*?)</span>', fragment, flags=re.S)
    return [(int(pos), html.unescape(text).replace("↵", "")) for pos, text in found]


def test_the_highlighted_words_are_the_prompt_exactly(split):
    merged = words.merged(split)
    shown = shown_tokens(token_html(merged, View(layer=2)))
    assert [pos for pos, _ in shown] == list(range(merged.num_tokens))
    assert "".join(text for _, text in shown[1:]) == split.prompt
    assert "Jide" in [text for _, text in shown]
def test_the_heatmap_labels_words(thirsty):
    page = heatmap_html(words.merged(thirsty), View(layer=5))
    audit_html(page)
    assert ">Jide<" in page and ">J<" not in page and "prompt word" in page


def test_views_of_words_say_word(split):
    merged = words.merged(split)
    assert "each word" in token_html(merged, View(layer=2)) and "each token" in token_html(split, View(layer=2))


def test_a_sliding_window_still_counts_pieces():
    """Gemma's local layers see the last 512 tokens: a prompt of 600 pieces in 300 words
    has <BOS> out of their sight all the same."""
    analysis = dataclasses.replace(hand_made(["<BOS>"] + [" J", "ide"] * 300, generated_from=None),
                                   layer_types=["local"], sliding_window=512)
    merged = words.merged(analysis)
    assert merged.num_tokens == 301 and merged.pieces == 601
    assert merged.bos_outside_window(0) and analysis.bos_outside_window(0)
