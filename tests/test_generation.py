"""Generation (attn/compute/generation.py): continue a prompt for N tokens; every step keeps the
attention of the position that predicted its token, exactly what a forward pass over that
step's prefix gives. Stepping through the steps never runs the model."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

import attn.compute.generation
from attn.compute import forward, generation
from attn.compute.engine import Engine
from attn.compute.generation import MAX_NEW_TOKENS, TOP_K, Continuation, check_continuation
from attn.errors import PromptError, ViewError
from attn.model.loading import LoadedModel
from attn.views.view import View, check_view, row
from helpers import THIRSTY, engine_with

STEPS = 8


@pytest.fixture(scope="module")
def thirsty(bundled_f32):
    """The bundled model continuing the lab's prompt greedily for 8 tokens."""
    return generation.generate(bundled_f32, THIRSTY, STEPS)


@pytest.fixture(scope="module")
def prefixes(bundled_f32, thirsty):
    """Each step's prefix analysed on its own: 8 separate forward passes (~4 s)."""
    return [prefix_analysis(bundled_f32, thirsty.step_analysis(k)) for k in range(thirsty.num_steps)]


@pytest.fixture(scope="module")
def windowed(tiny, gemma_tokenizer) -> LoadedModel:
    """A tiny random Gemma 3 whose local layers see 8 tokens: every prompt here is longer."""
    model = tiny.gemma3(vocab_size=len(gemma_tokenizer), num_layers=6, window=8,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2)
    return LoadedModel.wrap("tiny-window-8", model, gemma_tokenizer)


def prefix_analysis(loaded, step):
    """A separate forward pass over a step's tokens, as /analyze would run it."""
    return forward.forward(loaded, step.prompt, (step.token_ids.tolist(), step.tokens, step.spans))


# ---- the tokens ------------------------------------------------------------------------


def test_greedy_tokens_are_the_ones_model_generate_gives(bundled_f32, thirsty):
    ids = thirsty.steps[0].token_ids.tolist()
    with torch.inference_mode():
        out = bundled_f32.model.generate(torch.tensor([ids]), max_new_tokens=STEPS, do_sample=False)
    assert thirsty.generated_ids.tolist() == out[0, len(ids):].tolist()
    assert thirsty.generated[0] == " water" and thirsty.text.startswith(" water")


@pytest.mark.slow  # a few seconds of real-model passes; CI runs it
def test_each_chosen_token_s_probability_is_the_model_s(thirsty, prefixes):
    for k, alone in enumerate(prefixes):
        p = alone.top_k[0]
        assert p.id == thirsty.generated_ids[k]
        assert thirsty.probs[k] == pytest.approx(p.prob, abs=1e-5)
        assert thirsty.steps[k].top_k[0].id == p.id and len(thirsty.steps[k].top_k) == TOP_K


def test_the_same_seed_samples_the_same_tokens(gemma3_26):
    first = generation.generate(gemma3_26, THIRSTY, 4, temperature=1.0, seed=11)
    again = generation.generate(gemma3_26, THIRSTY, 4, temperature=1.0, seed=11)
    assert first.generated_ids.tolist() == again.generated_ids.tolist()
    for mine, theirs in zip(first.steps, again.steps, strict=True):
        np.testing.assert_array_equal(mine.last_row, theirs.last_row)
    other = generation.generate(gemma3_26, THIRSTY, 4, temperature=1.0, seed=12).generated_ids.tolist()
    assert other != first.generated_ids.tolist()  # random weights: near-uniform over 262k tokens


def test_greedy_generation_has_no_seed(gemma3_26):
    assert check_continuation(4, 0.0, seed=5) == check_continuation(4, 0, seed=9) == Continuation(4, 0.0, None)
    assert generation.generate(gemma3_26, THIRSTY, 2, seed=5).seed is None


def test_generation_stops_at_an_end_of_sequence_token(gemma3_26, monkeypatch):
    full = generation.generate(gemma3_26, THIRSTY, 6)
    stop = int(full.generated_ids[2])
    monkeypatch.setattr(attn.compute.generation, "eos_ids", lambda loaded: {stop})
    short = generation.generate(gemma3_26, THIRSTY, 6)
    first = full.generated_ids.tolist().index(stop)
    assert short.generated_ids.tolist() == full.generated_ids.tolist()[:first + 1]
    assert short.stopped_at_eos and not full.stopped_at_eos
    assert short.num_steps == first + 1
    for k in range(short.num_steps):
        np.testing.assert_array_equal(short.step_analysis(k).last_row, full.step_analysis(k).last_row)


# ---- the attention ---------------------------------------------------------------------


@pytest.mark.slow  # a few seconds of real-model passes; CI runs it
def test_each_step_s_attention_equals_a_forward_pass_over_its_prefix(thirsty, prefixes):
    """Every layer and head, to 1e-5; value-weighted attention too."""
    p = thirsty.num_prompt_tokens
    assert thirsty.num_steps == STEPS
    for k, alone in enumerate(prefixes):
        step = thirsty.step_analysis(k)
        assert step.last_row.shape == alone.last_row.shape == (18, 4, p + k)
        np.testing.assert_allclose(step.last_row, alone.last_row, rtol=0, atol=1e-5, err_msg=f"step {k}")
        np.testing.assert_allclose(step.value_norms, alone.value_norms, rtol=1e-4, atol=1e-5)


def test_local_layers_beyond_their_window_match_a_forward_pass(windowed):
    """Prompt longer than the window: a local layer's cache holds only its last keys."""
    result = generation.generate(windowed, THIRSTY, 5)
    assert result.num_prompt_tokens > windowed.sliding_window
    for k in range(result.num_steps):
        step = result.step_analysis(k)
        np.testing.assert_allclose(step.last_row, prefix_analysis(windowed, step).last_row, rtol=0, atol=1e-5)
        local = [i for i, t in enumerate(step.layer_types) if t == "local"]
        assert not step.last_row[local, :, : step.num_tokens - windowed.sliding_window].any()


def test_every_step_s_rows_sum_to_one(thirsty):
    for step in thirsty.steps:
        np.testing.assert_allclose(step.last_row.sum(-1), 1, atol=1e-5)


# ---- a step as an Analysis -------------------------------------------------------------


def test_a_step_is_an_analysis_of_the_prompt_and_the_tokens_generated_before_it(thirsty):
    k = 3
    step = thirsty.step_analysis(k)
    p = thirsty.num_prompt_tokens
    prompt = thirsty.steps[0]
    assert step.tokens == prompt.tokens + thirsty.generated[:k]
    assert step.token_ids.tolist() == prompt.token_ids.tolist() + thirsty.generated_ids[:k].tolist()
    assert step.generated_from == p and step.tokens[step.generated_from:] == thirsty.generated[:k]
    assert (step.next_token, step.next_token_id) == (thirsty.generated[k], int(thirsty.generated_ids[k]))
    assert step.top_k[0].id == step.next_token_id  # greedy
    assert step.prompt == THIRSTY + "".join(thirsty.generated[:k])
    assert [step.prompt[a:b] for a, b in step.spans[p:]] == thirsty.generated[:k]
    assert step.to_json()["generated_from"] == p


def test_the_views_draw_a_step_unchanged(thirsty):
    step = thirsty.step_analysis(STEPS - 1)
    view = check_view(step, View(layer=12, head="mean", bos="exclude"))
    weights = row(step, view)
    assert weights.shape == (step.num_tokens,) and math.isclose(float(weights.sum()), 1, abs_tol=1e-5)


def test_a_sampled_token_outside_the_top_k_is_still_in_its_step_s_top_k(gemma3_26):
    hot = generation.generate(gemma3_26, THIRSTY, 4, temperature=2.0, seed=1)
    for k in range(hot.num_steps):
        step = hot.step_analysis(k)
        chosen = [t for t in step.top_k if t.id == step.next_token_id]
        assert len(chosen) == 1 and chosen[0].prob == pytest.approx(float(hot.probs[k]))


@pytest.mark.parametrize("k", [-1, STEPS, 1.5, "two"])
def test_a_step_out_of_range_is_refused(thirsty, k):
    with pytest.raises(ViewError, match="[Ss]tep"):
        thirsty.step_analysis(k)


# ---- what crosses processes and the API ------------------------------------------------


def test_the_json_is_the_documented_api(thirsty):
    data = json.loads(json.dumps(thirsty.to_json()))
    assert set(data) == {"schema", "model", "prompt", "generated_ids", "generated", "steps"}
    assert data["schema"] == "attn-generation/1" and data["prompt"] == THIRSTY
    assert data["generated"] == thirsty.generated and len(data["steps"]) == STEPS
    p = thirsty.num_prompt_tokens
    for k, s in enumerate(data["steps"]):
        assert set(s) == {"token", "id", "prob", "attention"}
        assert (s["token"], s["id"]) == (data["generated"][k], data["generated_ids"][k])
        assert len(s["attention"]) == 18 and len(s["attention"][0]) == 4
        assert len(s["attention"][0][0]) == p + k  # <BOS> + prompt + generated[:k]
        assert math.isclose(sum(s["attention"][5][2]), 1, abs_tol=1e-4)


def test_a_generation_pickles_and_comes_back_equal(thirsty):
    back = pickle.loads(pickle.dumps(thirsty))
    assert back.generated == thirsty.generated and back.continuation == thirsty.continuation
    for mine, theirs in zip(back.steps, thirsty.steps, strict=True):
        assert mine.top_k == theirs.top_k and mine.spans == theirs.spans
        np.testing.assert_array_equal(mine.last_row, theirs.last_row)
    assert back.nbytes == thirsty.nbytes >= sum(s.last_row.nbytes + s.value_norms.nbytes for s in thirsty.steps)


# ---- in the engine ---------------------------------------------------------------------


class Refuse:
    """A loader that must not be reached."""

    calls = 0

    def __call__(self, name, progress):
        self.calls += 1
        raise AssertionError("the model was loaded for a request that should have been refused")


@pytest.fixture
def engine(gemma3_26):
    return engine_with(gemma3_26, ["tiny"])


def test_the_engine_caches_a_generation_under_its_continuation(engine):
    first = engine.generate(THIRSTY, "tiny", 3)
    assert engine.generate(THIRSTY, "tiny", 3) is first
    assert engine.generate(THIRSTY, "tiny", 3, seed=99) is first  # greedy: the seed plays no part
    assert engine.cached_generation(THIRSTY, "tiny", 3) is first
    sampled = engine.generate(THIRSTY, "tiny", 3, temperature=0.7, seed=1)
    assert sampled is not first and engine.cached_generation(THIRSTY, "tiny", 3, 0.7, 2) is None
    assert engine.generate_calls == 2 and engine.forward_calls == 0


def test_stepping_through_a_generation_runs_no_model(engine):
    result = engine.generate(THIRSTY, "tiny", 4)
    calls = (engine.generate_calls, engine.forward_calls)
    for k in range(result.num_steps):
        step = engine.cached_generation(THIRSTY, "tiny", 4).step_analysis(k)
        row(step, check_view(step, View(layer=5)))
    assert (engine.generate_calls, engine.forward_calls) == calls


@pytest.mark.parametrize("continuation, message", [
    ((0, 0.0, 0), "1-32"), ((MAX_NEW_TOKENS + 1, 0.0, 0), "1-32"), ((2.5, 0.0, 0), "whole number"),
    ((True, 0.0, 0), "whole number"), (("many", 0.0, 0), "whole number"),
    ((4, -0.5, 0), "Temperature"), ((4, float("nan"), 0), "Temperature"), ((4, 2.5, 0), "Temperature"),
    ((4, "hot", 0), "Temperature"), ((4, 1.0, -1), "seed"), ((4, 1.0, 2**32), "seed"),
], ids=["zero", "too-many", "fraction", "bool", "text", "negative-t", "nan-t", "hot-t", "text-t",
        "negative-seed", "huge-seed"])
def test_a_bad_continuation_is_refused_before_any_model_call(continuation, message):
    loader = Refuse()
    engine = engine_with(loader, ["tiny"])
    with pytest.raises(ViewError, match=message):
        engine.generate(THIRSTY, "tiny", *continuation)
    assert loader.calls == 0 and engine.generate_calls == 0


def test_a_bad_prompt_is_refused_before_any_model_call(engine):
    with pytest.raises(PromptError, match="empty"):
        engine.generate("   ", "tiny", 4)
    with pytest.raises(PromptError, match="limit"):
        engine.generate("word " * 5000, "tiny", 4)
    assert engine.generate_calls == 0


# ---- the command line ------------------------------------------------------------------


@pytest.mark.slow  # a few seconds of real-model passes; CI runs it
def test_the_cli_prints_the_continuation_and_what_each_step_attended_to(bundled_f32, monkeypatch, capsys):
    import attn.cli

    monkeypatch.setattr(Engine, "for_settings", classmethod(
        lambda cls, settings, accelerator=None: engine_with(bundled_f32, settings.models)))
    assert attn.cli.main([THIRSTY, "--generate", "3", "--layer", "12"]) == 0
    out = capsys.readouterr().out
    assert "continuation (3 tokens, greedy): ' water. She'" in out
    lines = out.splitlines()
    steps = lines[next(i for i, line in enumerate(lines) if line.startswith("each step at layer 12")) + 1:]
    assert [line.split()[0] for line in steps] == ["0", "1", "2"]
    for line, token in zip(steps, [" water", ".", " She"]):
        assert repr(token) in line and line.count(" 0.") >= 3  # its probability, then the top attended
