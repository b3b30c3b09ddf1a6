"""Token ablation (attn/compute/ablation.py): delete a prompt token, run the model again, and
report the original next token's probability. Batched, bounded, cached, never blocking."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from attn.compute import ablation
from attn.compute.ablation import EXHAUSTIVE_MAX_TOKENS, MOST_ATTENDED, ablate, p_next_without
from attn.compute.forward import analyze
from helpers import THIRSTY, engine_with

# 8 x 10 tokens + BOS: more than EXHAUSTIVE_MAX_TOKENS, so only the most attended are deleted.
LONGER = " ".join(["The cat sat on the mat and looked at it."] * 8)


def _one_by_one(loaded, ids, position, next_id) -> float:
    shortened = ids[:position] + ids[position + 1:]
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([shortened])).logits[0, -1]
    return float(torch.softmax(logits.float(), dim=-1)[next_id])


@pytest.fixture(scope="module")
def thirsty(bundled_f32, thirsty_analysis):
    result = thirsty_analysis  # conftest's analyze(bundled, THIRSTY): bundled is bundled_f32 here
    assert result.prompt == THIRSTY
    return result, ablate(bundled_f32, result)


@pytest.mark.slow  # nine plain forward passes as the reference: 3.6 s of CPU on one thread
def test_each_deletion_matches_running_the_model_on_the_shortened_ids(bundled_f32, thirsty):
    result, ablated = thirsty
    ids = result.token_ids.tolist()
    assert [d.index for d in ablated.deletions] == list(range(1, len(ids)))  # every token but <BOS>
    assert ablated.exhaustive
    for d in ablated.deletions:
        expected = _one_by_one(bundled_f32, ids, d.index, result.next_token_id)
        assert d.p_next == pytest.approx(expected, abs=1e-5), f"deleting #{d.index} {d.token!r}"
        assert d.delta == pytest.approx(d.p_next - ablated.p_next, abs=1e-7)
        assert d.token == result.tokens[d.index]


def test_deleting_thirsty_takes_away_most_of_water(thirsty):
    _, ablated = thirsty
    assert ablated.next_token == " water"
    thirsty_gone = next(d for d in ablated.deletions if d.token == " thirsty")
    assert thirsty_gone.p_next < ablated.p_next / 10


# One row per batch is nine forward passes of the real model (2 s of CPU, 20 s under load):
# slow. Three rows per batch keeps the comparison, and with it the real model's deletions,
# in the fast subset.
@pytest.mark.parametrize("batch_tokens", [pytest.param(1, marks=pytest.mark.slow), 30],
                         ids=["one-row-per-batch", "three-rows-per-batch"])
def test_batching_changes_nothing_beyond_1e_5(bundled_f32, thirsty, batch_tokens):
    result, ablated = thirsty
    positions = [d.index for d in ablated.deletions]
    smaller = p_next_without(bundled_f32, result.token_ids.tolist(), positions, result.next_token_id,
                             batch_tokens=batch_tokens)
    np.testing.assert_allclose(smaller, [d.p_next for d in ablated.deletions], rtol=0, atol=1e-5)


def test_long_prompts_delete_the_32_most_attended_tokens(gemma3_26):
    result = analyze(gemma3_26, LONGER)
    assert result.num_tokens > EXHAUSTIVE_MAX_TOKENS
    ablated = ablate(gemma3_26, result)
    indices = [d.index for d in ablated.deletions]
    assert not ablated.exhaustive and len(indices) == MOST_ATTENDED
    assert indices == sorted(indices) and 0 not in indices
    attention = result.last_row.mean(axis=(0, 1))
    weakest_kept = min(attention[i] for i in indices)
    left_out = [attention[i] for i in range(1, result.num_tokens) if i not in indices]
    assert max(left_out) <= weakest_kept


def test_progress_counts_deletions_batch_by_batch(gemma3_26):
    result = analyze(gemma3_26, THIRSTY)
    seen = []
    ablate(gemma3_26, result, progress=lambda done, total: seen.append((done, total)), batch_tokens=3 * 9)
    total = result.num_tokens - 1
    assert seen == [(0, total), (3, total), (6, total), (9, total)]


def test_ablation_json_is_the_documented_api(gemma3_26):
    data = json.loads(json.dumps(ablate(gemma3_26, analyze(gemma3_26, THIRSTY)).to_json()))
    assert {"next_token", "p_next", "tokens", "ablation"} <= set(data)
    assert data["schema"] == "attn-ablation/1" and data["exhaustive"] is True
    assert [row["index"] for row in data["ablation"]] == list(range(1, len(data["tokens"])))
    assert set(data["ablation"][0]) == {"index", "token", "p_next", "delta"}


# ---- in the engine -------------------------------------------------------------------


@pytest.fixture
def engine(gemma3_26):
    return engine_with(gemma3_26, ["tiny"])


def test_the_engine_caches_an_ablation_beside_its_analysis(engine):
    first = engine.ablate(THIRSTY, "tiny")
    assert engine.ablate(THIRSTY, "tiny") is first
    assert engine.ablation_calls == 1 and engine.forward_calls == 1  # the analysis ran once too
    assert engine.cached_ablation(THIRSTY, "tiny") is first
    assert engine.cached(THIRSTY, "tiny").next_token_id == first.next_token_id  # keys kept apart


def test_an_analysis_runs_between_ablation_batches(engine, monkeypatch):
    """Each batch takes the model's lock on its own: nobody waits for a whole ablation."""
    monkeypatch.setattr(ablation, "BATCH_TOKENS", 9)  # one deletion per batch
    answered = []

    def analyse_meanwhile(done, total):
        if done == 1:
            other = threading.Thread(target=lambda: answered.append(engine.analyze("Another prompt", "tiny")))
            other.start()
            other.join(timeout=60)

    engine.ablate(THIRSTY, "tiny", progress=analyse_meanwhile)
    assert len(answered) == 1
