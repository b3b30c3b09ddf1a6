"""Prompt -> Analysis: the prediction, the attention it came from, and the checks on it.

Also the views over an Analysis (attn/views/view.py), which are pure numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attn.compute import integrity
from attn.compute.analysis import SCHEMA, Analysis, TokenProb
from attn.compute.encode import encode
from attn.compute.forward import FULL_MATRIX_MAX_TOKENS, analyze
from attn.compute.integrity import check_integrity
from attn.errors import IntegrityError, PromptError, ViewError
from attn.views import view as views
from attn.views.view import View
from helpers import THIRSTY

LONG_PROMPT = " ".join(["The cat sat on the mat and looked at the bird."] * 50)  # 601 tokens


# ---- the bundled model's prediction --------------------------------------------------


@pytest.fixture(scope="module")
def thirsty(thirsty_analysis):
    return thirsty_analysis  # conftest's: the bundled model's analysis of THIRSTY, made once


def test_bundled_model_predicts_water_for_the_thirsty_prompt(bundled_f32, thirsty):
    result = thirsty  # analyze(bundled_f32, THIRSTY): bundled_f32 skips unless it is float32
    assert result.next_token == " water"
    assert result.top_k[0].token == " water"
    assert result.top_k[0].id == result.next_token_id


def test_top_k_is_sorted_probabilities_of_distinct_tokens(bundled):
    result = analyze(bundled, THIRSTY, top_k=5)
    probs = [t.prob for t in result.top_k]
    assert len(probs) == 5
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6
    assert len({t.id for t in result.top_k}) == 5


# ---- the attention is the model's attention ------------------------------------------


def _rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Standard (default) rotary embedding over positions 0..T-1, in float64."""
    d, length = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    x = x.double()
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def _recompute_last_row(config, layer: int, q: torch.Tensor, k: torch.Tensor) -> np.ndarray:
    """softmax(q_last . K^T * scale) with our own rotary, GQA sharing and masks: (heads, T)."""
    kind = config.layer_types[layer]
    rope = config.rope_parameters[kind]
    assert rope["rope_type"] == "default"
    q, k = _rotate(q, rope["rope_theta"]), _rotate(k, rope["rope_theta"])  # (H,T,d), (KV,T,d)
    group = config.num_attention_heads // config.num_key_value_heads
    k = k.repeat_interleave(group, dim=0)  # query head h reads kv head h // group
    scores = torch.einsum("hd,htd->ht", q[:, -1], k) * config.query_pre_attn_scalar**-0.5
    length = scores.shape[-1]
    distance = (length - 1) - torch.arange(length)  # q - k for the last query position
    if kind == "sliding_attention":
        scores[:, distance >= config.sliding_window] = -torch.inf
    return torch.softmax(scores, dim=-1).numpy()


def _record(loaded, prompt: str):
    """An analysis of `prompt`, with each layer's queries and keys as they leave
    q_norm/k_norm (before rotary), captured by hooks during the same forward pass."""
    captured: dict = {}
    handles = []
    for i, layer in enumerate(loaded.model.model.layers):
        attn_module = layer.self_attn
        for kind, norm in (("q", attn_module.q_norm), ("k", attn_module.k_norm)):
            handles.append(norm.register_forward_hook(
                lambda mod, args, out, key=(kind, i): captured.__setitem__(key, out[0].detach().clone())
            ))
    try:
        result = analyze(loaded, prompt)
    finally:
        for handle in handles:
            handle.remove()
    return result, captured


@pytest.fixture(scope="module")
def recorded(bundled_f32):
    """`recorded(prompt)`: the recorded analysis of a prompt, made once per module on first
    use (the 601-token one only when a slow test asks for it)."""
    runs: dict = {}

    def get(prompt: str):
        if prompt not in runs:
            runs[prompt] = _record(bundled_f32, prompt)
        return runs[prompt]

    return get


# A 601-token forward pass with hooks: about 4 s of CPU on one thread, a minute under load.
LONG = pytest.mark.slow


@pytest.mark.parametrize("prompt", [THIRSTY, pytest.param(LONG_PROMPT, marks=LONG)], ids=["short", "601-tokens"])
def test_last_row_equals_softmax_of_the_models_own_queries_and_keys(recorded, bundled_f32, prompt):
    result, captured = recorded(prompt)
    config = bundled_f32.model.config
    assert len(captured) == 2 * result.num_layers
    assert result.last_row.shape == (result.num_layers, result.num_heads, result.num_tokens)
    for layer in range(result.num_layers):
        expected = _recompute_last_row(config, layer, captured["q", layer], captured["k", layer])
        np.testing.assert_allclose(
            result.last_row[layer], expected, rtol=0, atol=1e-4, err_msg=f"layer {layer}"
        )


@LONG
def test_long_prompt_local_layers_are_exactly_zero_beyond_the_512_token_window(recorded):
    result, _ = recorded(LONG_PROMPT)
    length = result.num_tokens
    assert length > 512 + 50 and result.sliding_window == 512
    for layer, kind in enumerate(result.layer_types):
        row = result.last_row[layer]  # key k sits at distance (length - 1 - k)
        if kind == "local":
            assert (row[:, : length - 512] == 0).all(), f"layer {layer} sees beyond its window"
            assert (row[:, length - 512] > 0).all(), f"layer {layer}: distance 511 is in the window"
        else:
            assert (row > 0).all(), f"global layer {layer} has zeros"


@LONG
def test_long_prompts_keep_only_the_last_row(recorded):
    result, _ = recorded(LONG_PROMPT)
    assert result.num_tokens > FULL_MATRIX_MAX_TOKENS
    assert result.full is None


def test_short_prompts_keep_the_full_causal_matrix(recorded):
    result, _ = recorded(THIRSTY)
    length = result.num_tokens
    assert result.full.shape == (result.num_layers, result.num_heads, length, length)
    full = result.full.astype(np.float32)
    np.testing.assert_allclose(full[:, :, -1, :], result.last_row, atol=1e-3)
    assert (np.triu(full, k=1) == 0).all()
    np.testing.assert_allclose(full.sum(axis=-1), 1, atol=5e-3)


# ---- the same code for other model families ------------------------------------------

FAMILY_PROMPT = "The  quick brown fox, naïve & água!\nSaid: <|endoftext|> <bos> done."


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_26"])
def test_analysis_works_for_other_model_families(request, family):
    loaded = request.getfixturevalue(family)
    result = analyze(loaded, FAMILY_PROMPT)

    assert result.model == loaded.name
    assert result.last_row.shape == (loaded.num_layers, loaded.num_heads, result.num_tokens)
    np.testing.assert_allclose(result.last_row.sum(axis=-1), 1, atol=1e-5)
    assert len(result.tokens) == len(result.spans) == len(result.token_ids)
    _assert_spans_tile(result.spans, FAMILY_PROMPT)
    if family != "gemma3_26":
        assert result.layer_types == ["global"] * loaded.num_layers
        assert result.sliding_window is None


def _assert_spans_tile(spans, prompt):
    assert spans[0] == (0, 0)  # BOS
    position = 0
    for start, end in spans[1:]:
        assert start == position and end >= start
        position = end
    assert position == len(prompt)


def test_spans_tile_the_prompt_for_the_gemma_tokenizer(gemma_tokenizer):
    prompt = "  Leading spaces,\ttabs\n\nnewlines — and emoji 🙂 at the end  "
    ids, tokens, spans = encode(gemma_tokenizer, prompt)
    _assert_spans_tile(spans, prompt)
    assert len(ids) == len(tokens) == len(spans)
    assert tokens[0] == "<BOS>"


def test_display_tokens_are_readable_text(thirsty):
    result = thirsty
    assert result.tokens[0] == "<BOS>"
    assert "".join(result.tokens[1:]) == THIRSTY


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", " ", "  \n\t  "], ids=["empty", "space", "whitespace"])
def test_an_empty_or_blank_prompt_is_refused(bundled, prompt):
    with pytest.raises(PromptError, match="empty"):
        analyze(bundled, prompt)


@pytest.mark.parametrize("prompt", [None, 42, b"bytes", ["a list"]])
def test_a_prompt_that_is_not_text_is_refused(bundled, prompt):
    with pytest.raises(PromptError, match="text"):
        analyze(bundled, prompt)


def test_the_token_limit_counts_bos_and_is_named_in_the_error(gemma_tokenizer):
    ids, _, _ = encode(gemma_tokenizer, THIRSTY)
    assert len(encode(gemma_tokenizer, THIRSTY, max_tokens=len(ids))[0]) == len(ids)
    with pytest.raises(PromptError, match=f"limit is {len(ids) - 1} tokens"):
        encode(gemma_tokenizer, THIRSTY, max_tokens=len(ids) - 1)


def test_a_prompt_over_the_token_limit_is_refused_before_the_model_runs(bundled):
    with pytest.raises(PromptError, match="limit is 5 tokens"):
        analyze(bundled, THIRSTY, max_tokens=5)


def test_an_absurdly_long_prompt_is_refused_before_tokenizing(gemma_tokenizer, monkeypatch):
    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized a prompt that was obviously too long")

    monkeypatch.setattr(type(gemma_tokenizer), "__call__", no_tokenizing)
    with pytest.raises(PromptError, match="limit is 2 tokens"):
        encode(gemma_tokenizer, "x" * 1000, max_tokens=2)


def test_special_token_text_in_a_prompt_is_split_into_ordinary_tokens(bundled):
    tok = bundled.tokenizer
    prompt = "<bos>Hello <start_of_turn>user\nhi<end_of_turn><eos>"
    result = analyze(bundled, prompt)
    ids = result.token_ids.tolist()
    assert ids[0] == tok.bos_token_id == 2
    assert 2 not in ids[1:]
    specials = tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>", "<eos>"])
    assert not set(specials) & set(ids)
    _assert_spans_tile(result.spans, prompt)


def test_gpt2_end_of_text_typed_by_a_user_is_ordinary_text(gpt2):
    eot = gpt2.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids, _, _ = encode(gpt2.tokenizer, "a <|endoftext|> b")
    assert ids[0] == eot
    assert eot not in ids[1:]


# ---- integrity checks ----------------------------------------------------------------

WINDOW = 3
LENGTH = 6
KINDS = ["local", "global"]


def _valid_attention() -> list[torch.Tensor]:
    """Random softmax rows, causal, and windowed on the local layer: (1, heads, T, T) each."""
    gen = torch.Generator().manual_seed(0)
    q = torch.arange(LENGTH)[:, None]
    k = torch.arange(LENGTH)[None, :]
    layers = []
    for kind in KINDS:
        scores = torch.randn(1, 2, LENGTH, LENGTH, generator=gen)
        allowed = (k <= q) & ((q - k < WINDOW) if kind == "local" else True)
        layers.append(torch.softmax(scores.masked_fill(~allowed, -torch.inf), dim=-1))
    return layers


def test_valid_attention_passes_the_integrity_check():
    check_integrity(tuple(_valid_attention()), KINDS, WINDOW, "float32")


def test_beyond_window_attention_is_fine_on_a_global_layer():
    layers = _valid_attention()
    assert layers[1][0, 0, -1, 0] > 0  # the global layer already reaches past the window
    check_integrity(tuple(layers), KINDS, WINDOW, "float32")


def _move_mass(att: torch.Tensor, q: int, k: int) -> None:
    """Put half of row q's weight on key k, keeping the row summing to 1."""
    att[0, 0, q] *= 0.5
    att[0, 0, q, k] += 0.5


def _rows_off(layers):
    layers[1][0, 1, 4] *= 1.01


def _future(layers):
    _move_mass(layers[1], 2, 4)


def _beyond_window(layers):
    _move_mass(layers[0], 5, 5 - WINDOW)


def _nan(layers):
    layers[0][0, 0, 3, 1] = torch.nan


def _inf(layers):
    layers[1][0, 1, 2, 0] = torch.inf


@pytest.mark.parametrize(
    "breach, message",
    [
        (_rows_off, "sum to 1"),
        (_future, "later token"),
        (_beyond_window, "window"),
        (_nan, "NaN"),
        (_inf, "infinity"),
    ],
    ids=["rows-not-summing-to-1", "future-attention", "beyond-window-local", "nan", "inf"],
)
def test_attention_that_breaks_an_invariant_raises_integrity_error(breach, message):
    layers = _valid_attention()
    breach(layers)
    with pytest.raises(IntegrityError, match=message):
        check_integrity(tuple(layers), KINDS, WINDOW, "float32")


@pytest.mark.parametrize("rows", [1, 2, 4, 256])
def test_every_forbidden_cell_is_caught_whatever_the_row_block(monkeypatch, rows):
    """The checks read the attention a block of query rows at a time: no cell may slip
    between blocks. Each forbidden cell of a 6-token, window-3 pair of layers, alone."""
    monkeypatch.setattr(integrity, "CHECK_ROWS", rows)
    check_integrity(tuple(_valid_attention()), KINDS, WINDOW, "float32")
    for layer, kind in enumerate(KINDS):
        for q in range(LENGTH):
            for k in range(LENGTH):
                future, far = k > q, kind == "local" and q - k >= WINDOW
                if not (future or far):
                    continue
                layers = _valid_attention()
                _move_mass(layers[layer], q, k)
                with pytest.raises(IntegrityError, match="later token" if future else "window"):
                    check_integrity(tuple(layers), KINDS, WINDOW, "float32")


def test_a_missing_layer_raises_integrity_error():
    with pytest.raises(IntegrityError, match="2 layers, got 1"):
        check_integrity(tuple(_valid_attention()[:1]), KINDS, WINDOW, "float32")


def test_row_sum_tolerance_follows_the_dtype():
    layers = _valid_attention()
    layers[1][0, 1, 4] *= 1.005  # fine for bfloat16 arithmetic, not for float32
    check_integrity(tuple(layers), KINDS, WINDOW, "bfloat16")
    with pytest.raises(IntegrityError):
        check_integrity(tuple(layers), KINDS, WINDOW, "float32")


def test_analyze_refuses_to_return_broken_attention(gpt2):
    def leak_future(module, args, output):
        output.attentions = tuple(torch.ones_like(a) / a.shape[-1] for a in output.attentions)
        return output

    handle = gpt2.model.transformer.register_forward_hook(leak_future)  # the decoder, whichever way it is called
    try:
        with pytest.raises(IntegrityError, match="later token"):
            analyze(gpt2, "The quick brown fox")
    finally:
        handle.remove()


# ---- the Analysis record -------------------------------------------------------------


def test_analysis_serialises_to_the_documented_json(gpt2):
    result = analyze(gpt2, "The quick brown fox")
    data = json.loads(json.dumps(result.to_json()))
    assert data["schema"] == SCHEMA
    assert data["tokens"] == result.tokens
    assert data["token_ids"][0] == gpt2.tokenizer.bos_token_id
    assert (data["num_layers"], data["num_heads"]) == (gpt2.num_layers, gpt2.num_heads)
    assert np.asarray(data["attention"]).shape == result.last_row.shape
    assert data["next_token_id"] == result.next_token_id


def test_analysis_size_counts_the_full_matrix(gpt2):
    short = analyze(gpt2, "The quick brown fox")
    assert short.full is not None
    assert short.nbytes > short.full.nbytes + short.last_row.nbytes


# ---- views (attn/views/view.py) ---------------------------------------------------------


def _hand_made_analysis(full: bool = True) -> Analysis:
    """2 layers x 3 heads x 4 tokens, numbers chosen by hand (each row sums to 1)."""
    last_row = np.array(
        [
            [[0.7, 0.1, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2], [0.1, 0.6, 0.2, 0.1]],
            [[0.25, 0.25, 0.25, 0.25], [0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]],
        ],
        dtype=np.float32,
    )
    matrix = None
    if full:
        matrix = np.zeros((2, 3, 4, 4), dtype=np.float16)
        for q in range(4):
            matrix[:, :, q, : q + 1] = 1.0 / (q + 1)
        matrix[:, :, 3] = last_row
    return Analysis(
        model="hand", model_source="test", dtype="float32", prompt="a b c",
        tokens=["<BOS>", "a", " b", " c"], token_ids=np.array([2, 10, 11, 12]),
        spans=[(0, 0), (0, 1), (1, 3), (3, 5)], next_token=" d", next_token_id=13,
        top_k=[TokenProb(" d", 13, 0.5)], layer_types=["local", "global"], sliding_window=512,
        num_heads=3, last_row=last_row, full=matrix,
    )


def test_mean_view_averages_the_heads():
    a = _hand_made_analysis()
    np.testing.assert_allclose(views.row(a, View(layer=0, head="mean")), a.last_row[0].mean(axis=0))


def test_max_view_takes_the_strongest_head_per_token():
    a = _hand_made_analysis()
    np.testing.assert_allclose(views.row(a, View(layer=0, head="max")), [0.7, 0.6, 0.2, 0.2])


@pytest.mark.parametrize("head", [2, "2", "Head 2", np.int64(2)])
def test_single_head_view_shows_that_head(head):
    a = _hand_made_analysis()
    np.testing.assert_array_equal(views.row(a, View(layer=0, head=head)), a.last_row[0, 2])


def test_exclude_bos_renormalises_the_rest_to_sum_to_1():
    a = _hand_made_analysis()
    row = views.row(a, View(layer=0, head=0, bos="exclude"))
    assert row[0] == 0
    assert row.sum() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(row[1:], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("bos", ["gray", "hide"])
def test_gray_and_hide_leave_the_weights_unchanged(bos):
    a = _hand_made_analysis()
    np.testing.assert_array_equal(views.row(a, View(layer=1, head=1, bos=bos)), a.last_row[1, 1])


def test_exclude_bos_on_the_matrix_renormalises_every_row_that_has_other_keys():
    a = _hand_made_analysis()
    m = views.matrix(a, View(layer=1, head="mean", bos="exclude"))
    assert (m[:, 0] == 0).all()
    np.testing.assert_allclose(m[1:].sum(axis=-1), 1, atol=1e-6)
    assert (m[0] == 0).all()  # the first token can only see BOS: nothing left to show


def test_matrix_is_none_when_the_prompt_was_too_long_to_keep_it():
    assert views.matrix(_hand_made_analysis(full=False), View(layer=0)) is None


def test_overview_has_one_row_per_layer():
    a = _hand_made_analysis()
    grid = views.overview(a, View(layer=0, head="max", bos="exclude"))
    assert grid.shape == (2, 4)
    np.testing.assert_allclose(grid.sum(axis=-1), 1, atol=1e-6)


@pytest.mark.parametrize("layer", [2, -1, 100])
def test_an_out_of_range_layer_names_the_valid_range(layer):
    with pytest.raises(ViewError, match="layers 0-1"):
        views.row(_hand_made_analysis(), View(layer=layer))


@pytest.mark.parametrize("head", [3, -1, "Head 7"])
def test_an_out_of_range_head_names_the_valid_range(head):
    with pytest.raises(ViewError, match="heads 0-2"):
        views.row(_hand_made_analysis(), View(layer=0, head=head))


@pytest.mark.parametrize("view", [View(layer="top"), View(layer=0, head="median"), View(layer=0, bos="drop")])
def test_a_malformed_view_raises_view_error(view):
    with pytest.raises(ViewError):
        views.row(_hand_made_analysis(), view)


def test_strongest_skips_bos_by_default():
    row = np.array([0.7, 0.1, 0.15, 0.05])
    assert views.strongest(row, 2) == [(2, pytest.approx(0.15)), (1, pytest.approx(0.1))]
    assert views.strongest(row, 1, skip_bos=False)[0][0] == 0


def test_views_work_on_a_real_analysis(bundled, thirsty):
    result = thirsty
    for layer in (0, bundled.default_layer, bundled.num_layers - 1):
        for head in ("mean", "max", 0, bundled.num_heads - 1):
            row = views.row(result, View(layer=layer, head=head, bos="exclude"))
            assert row.shape == (result.num_tokens,)
            assert row.sum() == pytest.approx(1, abs=1e-5) and row[0] == 0
    with pytest.raises(ViewError, match=f"layers 0-{bundled.num_layers - 1}"):
        views.row(result, View(layer=bundled.num_layers))
