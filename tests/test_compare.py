"""Comparing two prompts (attn/compute/compare.py): the two cached analyses side by side, their
shared tokens paired, and the probability each prompt gives to the other's next token,
with no forward pass beyond the two analyses."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from attn.compute import compare
from attn.compute.compare import align, unembed_probs
from attn.compute.encode import encode
from attn.compute.forward import analyze
from attn.errors import PromptError
from attn.model.registry import BUNDLED
from helpers import HUNGRY, THIRSTY, engine_with


def next_token_probs(loaded, prompt: str) -> torch.Tensor:
    """The model's next-token distribution after `prompt`, straight from the model."""
    ids = encode(loaded.tokenizer, prompt).ids
    with torch.inference_mode():
        return torch.softmax(loaded.model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)


@pytest.fixture(scope="module")
def engine(bundled_f32):
    return engine_with(bundled_f32)


@pytest.fixture(scope="module")
def hungry_thirsty(engine):
    return engine.compare(HUNGRY, THIRSTY, BUNDLED)


# ---- the analyses ----------------------------------------------------------------------


@pytest.mark.slow  # two real analyses again; /compare in test_app_api checks the same
def test_the_two_sides_are_what_two_separate_analyses_give(bundled_f32, engine, hungry_thirsty):
    for side, prompt in ((hungry_thirsty.a, HUNGRY), (hungry_thirsty.b, THIRSTY)):
        alone = analyze(bundled_f32, prompt)
        assert side is engine.analyze(prompt, BUNDLED)  # the cached analysis itself
        assert side.tokens == alone.tokens and side.next_token_id == alone.next_token_id
        np.testing.assert_allclose(side.last_row, alone.last_row, rtol=0, atol=1e-6)
    assert (hungry_thirsty.a.next_token, hungry_thirsty.b.next_token) == (" a", " water")


def test_a_comparison_costs_the_two_analyses_and_is_cached(engine, hungry_thirsty):
    assert engine.forward_calls == 2 and engine.unembed_calls <= 1
    assert engine.compare(HUNGRY, THIRSTY, BUNDLED) is hungry_thirsty
    assert engine.cached_comparison(HUNGRY, THIRSTY, BUNDLED) is hungry_thirsty
    assert engine.forward_calls == 2


# ---- the alignment ---------------------------------------------------------------------


def test_shared_tokens_pair_one_to_one_and_the_changed_word_pairs_with_none(hungry_thirsty):
    a, b = hungry_thirsty.a.tokens, hungry_thirsty.b.tokens
    assert a[4] == " hungry" and b[4] == " thirsty" and len(a) == len(b) == 10
    assert hungry_thirsty.alignment == [(0, 0), (1, 1), (2, 2), (3, 3), (4, None), (None, 4),
                                        (5, 5), (6, 6), (7, 7), (8, 8), (9, 9)]
    assert hungry_thirsty.changed() == ([4], [4])


@pytest.mark.parametrize("tokens_a, tokens_b, expected", [
    (["<BOS>", "a", "b"], ["<BOS>", "a", "b"], [(0, 0), (1, 1), (2, 2)]),
    (["<BOS>", "a", "c"], ["<BOS>", "a", "b", "c"], [(0, 0), (1, 1), (None, 2), (2, 3)]),
    (["<BOS>", "x", "a"], ["<BOS>", "a"], [(0, 0), (1, None), (2, 1)]),
    (["<BOS>", "<BOS>"], ["<BOS>", "y"], [(0, 0), (1, None), (None, 1)]),
], ids=["same", "inserted", "deleted", "bos-text-typed"])
def test_align_pairs_bos_with_bos_and_every_index_once_in_order(tokens_a, tokens_b, expected):
    pairs = align(tokens_a, tokens_b)
    assert pairs == expected
    assert [i for i, _ in pairs if i is not None] == list(range(len(tokens_a)))
    assert [j for _, j in pairs if j is not None] == list(range(len(tokens_b)))


# ---- the cross probabilities -----------------------------------------------------------


def test_each_prompt_s_probability_of_the_other_s_next_token_is_the_model_s(bundled_f32, hungry_thirsty):
    a, b = hungry_thirsty.a, hungry_thirsty.b
    assert hungry_thirsty.p_b_of_a_next == pytest.approx(
        float(next_token_probs(bundled_f32, THIRSTY)[a.next_token_id]), abs=1e-5)
    assert hungry_thirsty.p_a_of_b_next == pytest.approx(
        float(next_token_probs(bundled_f32, HUNGRY)[b.next_token_id]), abs=1e-5)


def test_the_final_hidden_state_gives_back_the_prediction_s_probability(bundled_f32, hungry_thirsty):
    """What the unembedding fallback rests on: no decoder layer runs again."""
    a, b = hungry_thirsty.a, hungry_thirsty.b
    probs = unembed_probs(bundled_f32, np.stack([a.final_hidden, b.final_hidden]), [a.next_token_id, b.next_token_id])
    np.testing.assert_allclose(probs, [a.top_k[0].prob, b.top_k[0].prob], rtol=0, atol=1e-6)


def test_only_what_the_top_k_lacks_is_unembedded(hungry_thirsty):
    a, b = hungry_thirsty.a, hungry_thirsty.b
    assert compare.known_prob(b, a.next_token_id) is not None  # " a" is in thirsty's top 10
    assert compare.known_prob(a, b.next_token_id) is None  # " water" is not in hungry's
    asked = []

    def spy(hidden, token_ids):
        asked.append((hidden.shape, token_ids))
        return np.full(len(token_ids), 0.5, dtype=np.float32)

    assert compare.cross_probs(a, b, unembed=spy) == (compare.known_prob(b, a.next_token_id), 0.5)
    assert asked == [((1, a.final_hidden.shape[0]), [b.next_token_id])]


def test_a_probability_nothing_can_tell_is_none_never_a_guess(hungry_thirsty):
    a, b = hungry_thirsty.a, hungry_thirsty.b
    p_ab, p_ba = compare.cross_probs(replace(a, final_hidden=None), b, unembed=lambda h, ids: 1 / 0)
    assert p_ab == compare.known_prob(b, a.next_token_id) and p_ba is None


# ---- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_b, message", [("   ", "empty"), ("word " * 5000, "limit")], ids=["blank", "too-long"])
def test_a_bad_second_prompt_is_named_and_runs_no_model(gemma3_26, prompt_b, message):
    engine = engine_with(gemma3_26, ["tiny"])
    with pytest.raises(PromptError, match=f"^Prompt B: .*{message}"):
        engine.compare(THIRSTY, prompt_b, "tiny")
    assert engine.forward_calls == 0


def test_a_bad_first_prompt_is_named_prompt_a(gemma3_26):
    engine = engine_with(gemma3_26, ["tiny"])
    with pytest.raises(PromptError, match="^Prompt A: The prompt is empty"):
        engine.compare("", THIRSTY, "tiny")


# ---- the API ---------------------------------------------------------------------------


def test_the_json_holds_both_analyses_and_the_alignment(hungry_thirsty):
    data = json.loads(json.dumps(hungry_thirsty.to_json()))
    assert data["a"] == json.loads(json.dumps(hungry_thirsty.a.to_json()))
    assert data["b"]["prompt"] == THIRSTY
    assert data["alignment"][4:6] == [[4, None], [None, 4]]
    assert data["schema"] == "attn-compare/1"
    assert 0 < data["p_b_of_a_next"] < 1 and 0 < data["p_a_of_b_next"] < 1
