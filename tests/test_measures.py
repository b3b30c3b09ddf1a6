"""The three same-pass measures (attn/compute/measures.py), each against an independent
recomputation from the model's own modules and its own hidden states and attention.

- Logit lens (nostalgebraist 2020): softmax(lm_head(norm(h_l))) at the predicting position.
- Value-weighted attention (Kobayashi et al. 2020): ||a[l,h,t,j] * W_O^h v_j||_2.
- Attention rollout (Abnar & Zuidema 2020): last row of prod_l (0.5 mean_h A_l + 0.5 I).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from attn.compute.analysis import SCHEMA
from attn.compute.forward import analyze
from attn.compute.measures import rollout
from attn.errors import IntegrityError
from attn.model.loading import LoadedModel
from attn.views.view import View, row
from helpers import THIRSTY

TOL = 1e-4


def _close(got: float, expected: float) -> bool:
    """Within 1e-4, and within 0.1% of the value: the tiny model's probabilities are
    ~1/vocab, where an absolute 1e-4 alone would say nothing. (float32 logits of ~30
    round to ~1e-5, which moves a probability by about that fraction.)"""
    return abs(got - expected) <= TOL and abs(got - expected) <= 1e-3 * abs(expected)


def _reference(loaded, ids):
    """The model's own hidden states (after each layer) and full attention, in one plain
    call; transformers gives the last entry after the final norm."""
    with torch.inference_mode():
        out = loaded.model(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    return out.hidden_states, out.attentions


@torch.no_grad()
def _lens(model, hidden_states) -> np.ndarray:
    """(layers, vocab) float64: softmax of each layer's state at the last position through
    the model's final norm and unembedding (and soft-capping, where the config has it)."""
    last = len(hidden_states) - 2
    states = [
        h[0, -1] if layer == last else model.model.norm(h[:, -1:])[0, 0]  # the last is normed already
        for layer, h in enumerate(hidden_states[1:])
    ]
    logits = torch.stack(states).double() @ model.lm_head.weight.double().T
    cap = model.config.final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return torch.softmax(logits, dim=-1).numpy()


@torch.no_grad()
def _value_norms(model, hidden_states, attentions, layer: int) -> np.ndarray:
    """(heads, T): ||a[h, t, j] * W_O[:, h*d:(h+1)*d] v_j||, head by head, float64."""
    block = model.model.layers[layer]
    attn = block.self_attn
    x = block.input_layernorm(hidden_states[layer])[0]  # what the attention reads
    d = attn.head_dim
    v = attn.v_proj(x).double()  # (T, kv_heads * d): Gemma 3 does not norm the values
    w_o = attn.o_proj.weight.double()
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    rows = []
    for h in range(heads):
        kv = h // (heads // kv_heads)
        moved = v[:, kv * d:(kv + 1) * d] @ w_o[:, h * d:(h + 1) * d].T  # (T, hidden)
        a = attentions[layer][0, h, -1].double()[:, None]
        rows.append(torch.linalg.norm(a * moved, dim=-1))
    return torch.stack(rows).numpy()


def _rollout(attentions) -> np.ndarray:
    length = attentions[0].shape[-1]
    eye = torch.eye(length, dtype=torch.float64)
    rolled = eye
    for a in attentions:  # R = A^_{L-1} ... A^_0, built from the first layer up
        rolled = (0.5 * a[0].double().mean(dim=0) + 0.5 * eye) @ rolled
    return rolled[-1].numpy()


# The bundled case's float64 reference lens (18 layers through the 262,144-token unembedding)
# takes 3 s of CPU, 15 s under load: slow. The tiny Gemma 3 checks the same three measures
# with the same code in the fast subset.
@pytest.fixture(scope="module", params=[pytest.param("bundled", marks=pytest.mark.slow), "tiny-gemma3"])
def case(request):
    if request.param == "bundled":
        loaded = request.getfixturevalue("bundled_f32")
    else:
        loaded = request.getfixturevalue("gemma3_26")
    result = analyze(loaded, THIRSTY)
    hidden, attentions = _reference(loaded, result.token_ids.tolist())
    return loaded, result, hidden, attentions, _lens(loaded.model, hidden)


def test_logit_lens_is_each_layers_state_through_the_final_norm_and_unembedding(case):
    _, result, _, _, lens = case
    assert len(result.logit_lens) == result.num_layers
    for layer, step in enumerate(result.logit_lens):
        probs = lens[layer]
        assert _close(step.prob, probs.max()), f"layer {layer}: {step.prob} vs {probs.max()}"
        assert _close(probs[step.id], probs.max()), f"layer {layer}: {step.token!r} is not the top token"
        assert _close(step.p_next, probs[result.next_token_id]), f"layer {layer}"


def test_logit_lens_at_the_last_layer_is_the_prediction_exactly(case):
    _, result, _, _, _ = case
    last = result.logit_lens[-1]
    assert (last.id, last.token) == (result.next_token_id, result.next_token)
    assert last.prob == last.p_next == result.top_k[0].prob


def test_value_norms_are_attention_times_the_norm_of_each_keys_output_vector(case):
    loaded, result, hidden, attentions, _ = case
    assert result.value_norms.shape == (result.num_layers, result.num_heads, result.num_tokens)
    assert result.value_norms.dtype == np.float32
    for layer in range(result.num_layers):
        expected = _value_norms(loaded.model, hidden, attentions, layer)
        np.testing.assert_allclose(result.value_norms[layer], expected, rtol=TOL, atol=1e-7,
                                   err_msg=f"layer {layer}")


def test_rollout_is_the_last_row_of_the_product_of_residual_averaged_attention(case):
    _, result, _, attentions, _ = case
    assert result.rollout.shape == (result.num_tokens,) and result.rollout.dtype == np.float32
    np.testing.assert_allclose(result.rollout, _rollout(attentions), rtol=0, atol=TOL)
    assert result.rollout.sum() == pytest.approx(1, abs=TOL)


def test_a_rollout_that_does_not_sum_to_1_is_refused():
    rows = [torch.softmax(torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(i)), dim=-1)
            for i in range(3)]
    assert rollout(rows, row_tol=1e-4).sum() == pytest.approx(1, abs=1e-5)
    rows[1] = rows[1] * 1.01
    with pytest.raises(IntegrityError, match="rollout"):
        rollout(rows, row_tol=1e-4)


def test_families_without_named_value_projections_get_none_not_a_guess(gpt2, llama):
    assert analyze(gpt2, "The quick brown fox").value_norms is None  # fused qkv: no v_proj
    for loaded in (gpt2, llama):
        result = analyze(loaded, "The quick brown fox")
        assert len(result.logit_lens) == loaded.num_layers
        assert result.rollout.sum() == pytest.approx(1, abs=TOL)
    assert analyze(llama, "The quick brown fox").value_norms.shape[:2] == (llama.num_layers, llama.num_heads)


def test_the_schema_keeps_every_version_1_field_and_adds_the_measures(gemma3_26):
    result = analyze(gemma3_26, THIRSTY)
    data = json.loads(json.dumps(result.to_json()))
    assert SCHEMA == data["schema"] == "attn-analysis/3"
    version_1 = {"model", "model_source", "dtype", "prompt", "tokens", "token_ids", "spans", "next_token",
                 "next_token_id", "top_k", "num_layers", "num_heads", "layer_types", "sliding_window",
                 "attention"}
    version_3 = {"profiles", "sentences", "sentence_share"}  # tests/test_profiles.py
    assert set(data) == version_1 | {"schema", "logit_lens", "value_norms", "rollout"} | version_3
    assert len(data["logit_lens"]) == result.num_layers
    assert set(data["logit_lens"][0]) == {"token", "id", "prob", "p_next"}
    assert np.asarray(data["value_norms"]).shape == result.last_row.shape
    assert len(data["rollout"]) == result.num_tokens


def test_analysis_size_counts_the_measures(gemma3_26):
    result = analyze(gemma3_26, THIRSTY)
    assert result.nbytes > result.full.nbytes + result.last_row.nbytes + result.value_norms.nbytes


# The bfloat16 tolerances of docs/guarantees.md (the dtype the GPU runs), measured on the presets with
# the bundled model cast to bfloat16 on the CPU: attention 0.023, value shares 0.019,
# rollout 0.0003, logit-lens p_next 0.016 at most. These bounds leave room above that.
BF16_TOL = {"attention": 0.03, "value shares": 0.03, "rollout": 1e-3, "logit lens p_next": 0.03}


@pytest.mark.slow  # a few seconds of real-model passes; CI runs it
def test_bfloat16_measures_stay_within_the_readme_tolerance_of_float32(bundled_f32):
    half = LoadedModel.wrap(bundled_f32.name, copy.deepcopy(bundled_f32.model).to(torch.bfloat16),
                            bundled_f32.tokenizer)
    a, b = analyze(bundled_f32, THIRSTY), analyze(half, THIRSTY)
    assert b.dtype == "bfloat16" and b.next_token == a.next_token

    def shares(x):
        return np.stack([row(x, View(layer, head, measure="value")) for layer in range(x.num_layers)
                         for head in range(x.num_heads)])

    diffs = {
        "attention": np.abs(a.last_row - b.last_row).max(),
        "value shares": np.abs(shares(a) - shares(b)).max(),
        "rollout": np.abs(a.rollout - b.rollout).max(),
        "logit lens p_next": max(abs(x.p_next - y.p_next) for x, y in zip(a.logit_lens, b.logit_lens)),
    }
    for name, diff in diffs.items():
        assert diff <= BF16_TOL[name], f"{name}: {diff:.4g} > {BF16_TOL[name]}"
    assert b.logit_lens[-1].id == b.next_token_id  # the last layer is still the prediction
