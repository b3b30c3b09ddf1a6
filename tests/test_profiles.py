"""Head profiles and sentence shares (attn/compute/profiles.py, schema attn-analysis/3), each
against an independent recomputation from the model's own `output_attentions`, in float64,
for every layer and head: the bundled Gemma 3 270M and tiny random Gemma 3s (one with a
short sliding window, so that local layers, the row blocks and the window cut all count).

The definitions (docs/lessons.md#definitions), A over [<BOS>] + prompt, T positions:
bos = mean_{i=1..T-1} A[i,0]; previous = mean_{i=2..T-1} A[i,i-1];
entropy = mean_{i=1..T-1} -sum_j A[i,j] ln A[i,j] (0 ln 0 = 0);
sentence_share[l,s] = sum_{j in s} mean_h A[l,h,T-1,j] / (1 - mean_h A[l,h,T-1,0]).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from attn.compute.analysis import SCHEMA
from attn.compute.forward import analyze
from attn.compute.profiles import PROFILE_ROWS
from attn.model.loading import LoadedModel
from helpers import ARTIST, THIRSTY

TOL = 2e-6  # float32 reductions against float64 (entropies of ~3 nats round to ~1e-7)


def attentions(loaded: LoadedModel, ids) -> torch.Tensor:
    """(layers, heads, T, T) float64: the model's own weights from one plain call."""
    with torch.inference_mode():
        out = loaded.model(torch.tensor([list(ids)]), output_attentions=True)
    return torch.stack([a[0] for a in out.attentions]).double()


def reference_profiles(a: torch.Tensor) -> dict[str, np.ndarray]:
    """The three definitions, written out loop by loop over query positions."""
    t = a.shape[-1]
    bos = sum(a[:, :, i, 0] for i in range(1, t)) / (t - 1)
    previous = (sum(a[:, :, i, i - 1] for i in range(2, t)) / (t - 2)) if t > 2 else torch.full(bos.shape, math.nan)
    entropy = torch.zeros_like(bos)
    for i in range(1, t):
        row = a[:, :, i, :]
        entropy -= torch.where(row > 0, row * torch.log(torch.where(row > 0, row, 1.0)), 0.0).sum(dim=-1)
    return {"bos": bos.numpy(), "previous": previous.numpy(), "entropy": (entropy / (t - 1)).numpy()}


def reference_shares(a: torch.Tensor, sentences) -> np.ndarray:
    last = a[:, :, -1, :].mean(dim=1)  # (layers, T): mean over heads
    return np.stack([(last[:, s:e].sum(dim=-1) / (1 - last[:, 0])).numpy() for s, e in sentences], axis=1)


def check_against_reference(loaded: LoadedModel, prompt: str):
    analysis = analyze(loaded, prompt, max_tokens=4096)
    a = attentions(loaded, analysis.token_ids)
    expected = reference_profiles(a)
    for kind, values in expected.items():
        got = analysis.profiles.of(kind)
        assert got.shape == (analysis.num_layers, analysis.num_heads) and got.dtype == np.float32
        np.testing.assert_allclose(got, values, atol=TOL, rtol=0, err_msg=kind)
    np.testing.assert_allclose(analysis.sentence_share, reference_shares(a, analysis.sentences), atol=TOL, rtol=0)
    return analysis


def test_profiles_and_shares_match_output_attentions_on_the_bundled_model(bundled_f32):
    analysis = check_against_reference(bundled_f32, ARTIST)
    assert analysis.sentences == [(1, 12), (12, 27), (27, 37)]  # "palette." | "canvas." | the open tail


def test_profiles_match_on_a_single_sentence(bundled_f32):
    analysis = check_against_reference(bundled_f32, THIRSTY)
    assert analysis.sentences == [(1, analysis.num_tokens)]
    np.testing.assert_allclose(analysis.sentence_share, 1.0, atol=1e-6)  # one sentence takes all non-<BOS>


def test_profiles_match_on_a_tiny_gemma3_with_a_short_window(gemma_tokenizer):
    """A window of 5 and a prompt over PROFILE_ROWS tokens: local layers' reductions skip
    keys out of the window, row blocks meet, and both must equal the full sums."""
    from conftest import tiny_gemma3

    model = tiny_gemma3(vocab_size=len(gemma_tokenizer), num_layers=6, window=5, seed=7)
    loaded = LoadedModel.wrap("tiny-gemma3-window5", model, gemma_tokenizer)
    prompt = " ".join(["One cat. Two dogs! Three birds?"] * 40)
    analysis = check_against_reference(loaded, prompt)
    assert analysis.num_tokens > PROFILE_ROWS + 5
    assert set(analysis.layer_types) == {"local", "global"}


def test_profiles_match_on_the_26_layer_tiny_gemma3(gemma3_26):
    check_against_reference(gemma3_26, ARTIST)


def test_a_one_token_prompt_has_no_previous_token_profile(bundled_f32):
    analysis = check_against_reference(bundled_f32, "Hello")
    assert analysis.num_tokens == 2 and np.isnan(analysis.profiles.previous).all()
    data = analysis.to_json()
    assert data["profiles"]["previous"][0] == [None] * analysis.num_heads
    assert json.dumps(data, allow_nan=False)


def test_profiles_reduce_inside_the_pass_by_hooks(bundled_f32, monkeypatch):
    """Each attention module's weights are reduced as they appear: no second reading of the
    pass's attentions afterwards (the fallback) is needed for a model with found modules."""
    from attn.compute import forward as forward_module

    calls = []
    real = forward_module.profiles.layer_profile

    def counted(weights, window=None):
        calls.append(weights.shape)
        return real(weights, window)

    monkeypatch.setattr("attn.compute.hooks.layer_profile", counted)
    monkeypatch.setattr(forward_module.profiles, "layer_profile", lambda *a: pytest.fail("fallback used"))
    analysis = analyze(bundled_f32, THIRSTY)
    assert len(calls) == analysis.num_layers
    assert analysis.profiles is not None


def test_a_model_without_found_modules_gets_profiles_from_its_weights(gpt2):
    """GPT-2 (no v_proj): the profiles still come, from the pass's own attentions."""
    analysis = check_against_reference(gpt2, "The quick brown fox. It jumps")
    assert analysis.profiles.bos.shape == (3, 4)


def test_schema_3_keeps_every_version_2_field(thirsty_analysis):
    data = thirsty_analysis.to_json()
    assert data["schema"] == SCHEMA == "attn-analysis/3"
    for field in ("tokens", "token_ids", "spans", "next_token", "top_k", "attention", "logit_lens",
                  "value_norms", "rollout", "layer_types", "sliding_window", "num_layers", "num_heads"):
        assert field in data
    layers, heads = thirsty_analysis.num_layers, thirsty_analysis.num_heads
    assert set(data["profiles"]) == {"bos", "previous", "entropy"}
    assert all(len(data["profiles"][k]) == layers and len(data["profiles"][k][0]) == heads for k in data["profiles"])
    assert data["sentences"] == [[1, thirsty_analysis.num_tokens]]
    assert len(data["sentence_share"]) == layers and len(data["sentence_share"][0]) == 1


def test_profiles_can_be_left_out_to_time_them(bundled_f32):
    from attn.compute.encode import encode
    from attn.compute.forward import forward

    analysis = forward(bundled_f32, THIRSTY, encode(bundled_f32.tokenizer, THIRSTY), with_profiles=False)
    assert analysis.profiles is None and analysis.to_json()["profiles"] is None
    assert analysis.sentences is not None  # shares come from the kept row, at no cost


# ---- the layer-profile grid (attn/views/profile_grid.py) -------------------------------------------


@pytest.fixture(scope="module")
def artist(bundled_f32):
    return analyze(bundled_f32, ARTIST)


def grid_cells(html: str) -> list[dict]:
    return [dict(re.findall(r'([a-z-]+)="([^"]*)"', b)) for b in re.findall(r"<button ([^>]*)>", html)]


@pytest.mark.parametrize("kind", ["bos", "previous", "entropy"])
def test_the_grid_has_a_button_per_layer_and_head_with_its_reading(artist, kind):
    from attn.views.profile_grid import profile_grid_html
    from attn.views.view import View

    cells = grid_cells(profile_grid_html(artist, kind, View(layer=3, head=1)))
    assert len(cells) == artist.num_layers * artist.num_heads
    values = artist.profiles.of(kind)
    for cell in cells:
        layer, head = int(cell["data-layer"]), int(cell["data-head"])
        value = float(values[layer, head])
        expected = {"bos": f"{value:.0%} on &lt;BOS&gt;", "previous": f"{value:.0%} on the previous token",
                    "entropy": f"entropy {value:.2f} nats"}[kind]
        assert cell["aria-label"] == cell["title"] == f"layer {layer}, head {head}: {expected}"
        assert cell["type"] == "button"


def test_the_grid_frames_the_chosen_layer_and_head_and_marks_global_layers(artist):
    from attn.views.palette import GLOBAL_LAYER
    from attn.views.profile_grid import profile_grid_html
    from attn.views.view import View

    html = profile_grid_html(artist, "previous", View(layer=5, head=2))
    current = [b for b in re.findall(r"<button ([^>]*)>", html) if "aria-current" in b]
    assert len(current) == 1 and 'data-layer="5" data-head="2"' in current[0]
    mean = [b for b in re.findall(r"<button ([^>]*)>", profile_grid_html(artist, "bos", View(layer=5)))
            if "aria-current" in b]
    assert len(mean) == artist.num_heads  # mean over heads: the whole layer
    globals_ = [i for i, t in enumerate(artist.layer_types) if t == "global"]
    assert all(f'{GLOBAL_LAYER}">{i} G</th>' in html for i in globals_)
    assert html.count(" G</th>") == len(globals_)


def test_every_cell_colour_reads_at_4_5_to_1():
    from attn.views.palette import contrast, on_ramp

    for t in np.linspace(0, 1, 201):
        background, ink = on_ramp(t)
        assert contrast(background, ink) >= 4.5, (t, background, ink)


def test_a_generation_step_has_no_profiles_and_says_why(artist):
    from dataclasses import replace

    from attn.views.profile_grid import profile_grid_html

    html = profile_grid_html(replace(artist, profiles=None), "bos")
    assert "<button" not in html and "one row of attention" in html
