"""The app's public API through gradio_client, against the real server (app.py as a
subprocess, the bundled Gemma 3 270M): /analyze, /view, /stats, readable errors, and
"moving a control never runs the model again"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import app_server
from helpers import THIRSTY

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = json.loads((ROOT / "examples.json").read_text(encoding="utf-8"))
MODEL = app_server.BUNDLED
NUM_LAYERS, NUM_HEADS = 18, 4
GLOBAL_LAYERS = [5, 11, 17]
ROW_TOL = 1e-4  # rows are float32 softmax rows, rounded to 6 digits in the JSON


@pytest.fixture(scope="module")
def client(app):
    # Imported here, not at the top: collecting the fast subset should not pay for it.
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def thirsty(client) -> dict:
    return client.predict(THIRSTY, MODEL, api_name="/analyze")


def stats(client) -> dict:
    return client.predict(api_name="/stats")


def api_error(call) -> str:
    """The message of the exception a failing endpoint raises in the client."""
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def assert_schema(result: dict, prompt: str) -> None:
    for key in ("schema", "model", "prompt", "tokens", "token_ids", "spans", "next_token",
                "next_token_id", "top_k", "num_layers", "num_heads", "layer_types", "attention"):
        assert key in result, key
    assert result["schema"] == "attn-analysis/3"
    assert result["model"] == MODEL
    assert result["prompt"] == prompt
    tokens = result["tokens"]
    assert tokens[0] == "<BOS>"
    assert len(tokens) >= 2
    assert len(result["token_ids"]) == len(result["spans"]) == len(tokens)
    # Spans tile the prompt exactly (what the highlighted view draws).
    assert "".join(prompt[a:b] for a, b in result["spans"][1:]) == prompt

    top_k = result["top_k"]
    assert isinstance(top_k, list) and top_k
    for entry in top_k:
        assert set(entry) == {"token", "id", "prob"}
        assert isinstance(entry["token"], str) and isinstance(entry["id"], int)
        assert 0.0 <= entry["prob"] <= 1.0
    probs = [e["prob"] for e in top_k]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1.0 + 1e-4
    assert (top_k[0]["token"], top_k[0]["id"]) == (result["next_token"], result["next_token_id"])

    assert result["num_layers"] == NUM_LAYERS
    assert result["num_heads"] == NUM_HEADS
    types = result["layer_types"]
    assert len(types) == NUM_LAYERS
    assert [i for i, t in enumerate(types) if t == "global"] == GLOBAL_LAYERS
    assert set(types) == {"global", "local"}

    att = result["attention"]
    assert len(att) == NUM_LAYERS
    for layer in att:
        assert len(layer) == NUM_HEADS
        for head_row in layer:
            assert len(head_row) == len(tokens)
            assert min(head_row) >= 0.0
            assert math.isclose(sum(head_row), 1.0, abs_tol=ROW_TOL)


# ---- endpoints -------------------------------------------------------------------------


def test_named_endpoints_are_exactly_analyze_view_ablate_stats(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(named) == {"/analyze", "/view", "/ablate", "/compare", "/generate", "/stats"}
    params = {name: [p["parameter_name"] for p in spec["parameters"]] for name, spec in named.items()}
    assert params == {
        "/analyze": ["prompt", "model"],
        "/view": ["prompt", "model", "layer", "head", "bos", "measure"],
        "/ablate": ["prompt", "model"],
        "/compare": ["prompt_a", "prompt_b", "model"],
        "/generate": ["prompt", "model", "max_new_tokens", "temperature", "seed"],
        "/stats": [],
    }


def test_analyze_returns_the_json_schema(thirsty):
    assert_schema(thirsty, THIRSTY)
    assert thirsty["next_token"] == " water"
    assert thirsty["tokens"][:2] == ["<BOS>", "J"]
    assert " thirsty" in thirsty["tokens"]


@pytest.mark.parametrize("preset", EXAMPLES, ids=[p["name"] for p in EXAMPLES])
def test_presets_analyse(client, preset):
    result = client.predict(preset["prompt"], MODEL, api_name="/analyze")
    assert_schema(result, preset["prompt"])
    if preset["name"] == "Thirsty":
        assert result["next_token"] == " water"
    # The preset's suggested layer is a valid view for this model.
    layer = preset["layer"][MODEL]
    view = client.predict(preset["prompt"], MODEL, layer, "mean", "gray", api_name="/view")
    assert view["layer"] == layer
    assert view["next_token"] == result["next_token"]


def test_view_matches_analyze(client, thirsty):
    att = thirsty["attention"]
    for layer in (0, 5, 17):
        for head in range(NUM_HEADS):
            head_arg = (str(head), f"Head {head}")[(layer + head) % 2]  # both spellings the UI uses
            view = client.predict(THIRSTY, MODEL, layer, head_arg, "gray", api_name="/view")
            assert view["head"] == head
            assert view["weights"] == pytest.approx(att[layer][head], abs=2e-6)
        mean = [sum(att[layer][h][k] for h in range(NUM_HEADS)) / NUM_HEADS for k in range(len(thirsty["tokens"]))]
        top = [max(att[layer][h][k] for h in range(NUM_HEADS)) for k in range(len(thirsty["tokens"]))]
        view_mean = client.predict(THIRSTY, MODEL, layer, "mean", "gray", api_name="/view")
        view_max = client.predict(THIRSTY, MODEL, layer, "Max over heads", "gray", api_name="/view")
        assert view_mean["head"] == "mean" and view_max["head"] == "max"
        assert view_mean["weights"] == pytest.approx(mean, abs=2e-6)
        assert view_max["weights"] == pytest.approx(top, abs=2e-6)


def test_view_payload(client, thirsty):
    view = client.predict(THIRSTY, MODEL, 5, "Head 2", "exclude", api_name="/view")
    assert set(view) == {"model", "layer", "layer_type", "head", "bos", "measure", "tokens", "weights", "next_token"}
    assert (view["model"], view["layer"], view["layer_type"], view["head"], view["bos"]) == (
        MODEL, 5, "global", 2, "exclude")
    assert view["tokens"] == thirsty["tokens"]
    assert view["next_token"] == " water"
    w = view["weights"]
    assert len(w) == len(thirsty["tokens"])
    # exclude: BOS dropped, the rest renormalised to sum to 1.
    assert w[0] == 0.0
    assert math.isclose(sum(w), 1.0, abs_tol=ROW_TOL)
    raw = thirsty["attention"][5][2]
    rest = sum(raw[1:])
    assert w[1:] == pytest.approx([x / rest for x in raw[1:]], abs=1e-5)
    # gray and hide draw differently but report the unchanged weights.
    gray = client.predict(THIRSTY, MODEL, 12, "mean", "gray", api_name="/view")
    hide = client.predict(THIRSTY, MODEL, 12, "mean", "hide", api_name="/view")
    assert gray["weights"] == hide["weights"]
    assert gray["layer_type"] == "local"
    assert math.isclose(sum(gray["weights"]), 1.0, abs_tol=ROW_TOL)


def test_stats_counters(client, thirsty):
    s = stats(client)
    # THIRSTY is a preset: its analysis comes from the shipped records, not a forward pass.
    assert isinstance(s["forward_calls"], int) and s["forward_calls"] + s["store"]["hits"] >= 1
    assert set(s["cache"]) == {"hits", "misses", "entries", "bytes", "max_bytes"}
    assert set(s["store"]) == {"hits", "misses", "dropped", "writes", "bytes", "max_bytes", "writable"}
    assert s["store"]["writable"] and 0 <= s["store"]["bytes"] <= s["store"]["max_bytes"]
    assert s["cache"]["entries"] >= 1
    assert 0 < s["cache"]["bytes"] <= s["cache"]["max_bytes"]
    assert s["models"][MODEL] == "ready"
    assert MODEL in s["models"] and "gemma-3-1b" in s["models"]  # the real model list


def test_reanalysing_a_prompt_is_a_cache_hit(client, thirsty):
    before = stats(client)
    again = client.predict(THIRSTY, MODEL, api_name="/analyze")
    after = stats(client)
    assert again == thirsty
    assert after["forward_calls"] == before["forward_calls"]
    assert after["cache"]["hits"] > before["cache"]["hits"]
    assert after["cache"]["misses"] == before["cache"]["misses"]


def test_layer_and_head_switches_make_no_model_call(client, thirsty):
    before = stats(client)["forward_calls"]
    views = [(0, "mean", "gray"), (3, "max", "hide"), (5, "0", "exclude"), (11, "Head 3", "gray"),
             (12, "mean", "hide"), (17, "max", "exclude"), (17, "Head 1", "gray"), (1, "2", "hide")]
    for layer, head, bos in views:
        view = client.predict(THIRSTY, MODEL, layer, head, bos, api_name="/view")
        assert view["layer"] == layer and view["bos"] == bos
    assert stats(client)["forward_calls"] == before


def test_measure_switches_make_no_model_call_and_draw_the_analysis_numbers(client, thirsty):
    before = stats(client)["forward_calls"]
    value = client.predict(THIRSTY, MODEL, 12, "Head 1", "gray", "value", api_name="/view")
    norms = thirsty["value_norms"][12][1]
    assert value["measure"] == "value"
    assert value["weights"] == pytest.approx([n / sum(norms) for n in norms], abs=2e-6)  # shares of the row
    rollout = client.predict(THIRSTY, MODEL, 3, "mean", "gray", "rollout", api_name="/view")
    assert rollout["weights"] == pytest.approx(thirsty["rollout"], abs=2e-6)  # one row for every layer
    assert stats(client)["forward_calls"] == before


def test_ablate_returns_its_schema_with_one_row_per_removable_token(client):
    # Not THIRSTY: the browser test watches that prompt's ablation run, on the same shared server.
    prompt = THIRSTY.replace("thirsty", "hungry")
    analysis = client.predict(prompt, MODEL, api_name="/analyze")
    result = client.predict(prompt, MODEL, api_name="/ablate")
    assert {"next_token", "p_next", "tokens", "ablation"} <= set(result)
    assert result["next_token"] == analysis["next_token"] and result["tokens"] == analysis["tokens"]
    assert result["p_next"] == pytest.approx(analysis["top_k"][0]["prob"], abs=1e-6)
    rows = result["ablation"]
    assert [r["index"] for r in rows] == list(range(1, len(analysis["tokens"])))  # <BOS> never removed
    for r in rows:
        assert set(r) == {"index", "token", "p_next", "delta"}
        assert r["token"] == analysis["tokens"][r["index"]]
        assert r["delta"] == pytest.approx(r["p_next"] - result["p_next"], abs=2e-6)
    again_before = stats(client)
    assert client.predict(prompt, MODEL, api_name="/ablate") == result  # cached
    assert stats(client)["ablation_calls"] == again_before["ablation_calls"]


@pytest.mark.parametrize(
    "prompt, model, expected",
    [
        ("", MODEL, "The prompt is empty: type some text to analyse."),
        ("Hello", "gpt-5", "Unknown model 'gpt-5'. Choose one of: gemma-3-1b, gemma-3-270m."),
    ],
    ids=["empty", "unknown-model"],
)
def test_a_bad_ablate_request_is_a_readable_error(client, prompt, model, expected):
    before = stats(client)
    assert api_error(lambda: client.predict(prompt, model, api_name="/ablate")) == expected
    after = stats(client)
    assert (after["forward_calls"], after["ablation_calls"]) == (before["forward_calls"], before["ablation_calls"])


def test_compare_is_two_analyses_with_hungry_and_thirsty_aligned_one_to_one(client, thirsty):
    hungry_prompt = THIRSTY.replace("thirsty", "hungry")
    result = client.predict(hungry_prompt, THIRSTY, MODEL, api_name="/compare")
    assert result["b"] == thirsty
    assert result["a"] == client.predict(hungry_prompt, MODEL, api_name="/analyze")
    tokens_a, tokens_b = result["a"]["tokens"], result["b"]["tokens"]
    pairs = [tuple(p) for p in result["alignment"]]
    shared = [(i, j) for i, j in pairs if i is not None and j is not None]
    assert all(tokens_a[i] == tokens_b[j] for i, j in shared)
    assert len(shared) == len(tokens_a) - 1 == len(tokens_b) - 1  # all but the changed word, once each
    assert (tokens_a.index(" hungry"), None) in pairs and (None, tokens_b.index(" thirsty")) in pairs
    assert 0 <= result["p_b_of_a_next"] <= 1 and 0 <= result["p_a_of_b_next"] <= 1


def test_a_bad_second_prompt_says_which_prompt(client):
    msg = api_error(lambda: client.predict(THIRSTY, "   ", MODEL, api_name="/compare"))
    assert msg == "Prompt B: The prompt is empty: type some text to analyse."


def test_generate_gives_each_step_its_attention_over_the_keys_before_it(client, thirsty):
    result = client.predict(THIRSTY, MODEL, 4, api_name="/generate")
    assert {"prompt", "generated_ids", "generated", "steps"} <= set(result)
    assert result["generated"][0] == " water" and len(result["steps"]) == len(result["generated_ids"]) == 4
    n_prompt = len(thirsty["tokens"])
    for k, step in enumerate(result["steps"]):
        assert (step["token"], step["id"]) == (result["generated"][k], result["generated_ids"][k])
        assert len(step["attention"]) == NUM_LAYERS and len(step["attention"][0]) == NUM_HEADS
        assert all(len(head) == n_prompt + k for layer in step["attention"] for head in layer)
    assert result["steps"][0]["attention"] == thirsty["attention"]  # step 0 is the prompt's own prediction
    before = stats(client)["generate_calls"]
    assert client.predict(THIRSTY, MODEL, 4, api_name="/generate") == result  # cached
    assert stats(client)["generate_calls"] == before


def test_a_new_prompt_costs_exactly_one_forward_pass(client):
    prompt = "The API test counts forward passes for this prompt only"
    before = stats(client)["forward_calls"]
    client.predict(prompt, MODEL, api_name="/analyze")
    client.predict(prompt, MODEL, 3, "mean", "gray", api_name="/view")
    client.predict(prompt, MODEL, api_name="/analyze")
    assert stats(client)["forward_calls"] == before + 1


# ---- readable errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("", "The prompt is empty: type some text to analyse."),
        ("   \n\t  ", "The prompt is empty: type some text to analyse."),
    ],
    ids=["empty", "whitespace"],
)
def test_empty_prompt_is_a_readable_error(client, prompt, expected):
    before = stats(client)["forward_calls"]
    assert api_error(lambda: client.predict(prompt, MODEL, api_name="/analyze")) == expected
    assert api_error(lambda: client.predict(prompt, MODEL, 0, "mean", "gray", api_name="/view")) == expected
    assert stats(client)["forward_calls"] == before


def test_unknown_model_is_a_readable_error(client):
    msg = api_error(lambda: client.predict("Hello", "gpt-5", api_name="/analyze"))
    assert msg == "Unknown model 'gpt-5'. Choose one of: gemma-3-1b, gemma-3-270m."
    msg = api_error(lambda: client.predict("Hello", "gpt-5", 0, "mean", "gray", api_name="/view"))
    assert "Unknown model 'gpt-5'" in msg


def test_gated_model_without_token_is_a_readable_error(client):
    msg = api_error(lambda: client.predict("Hello", "gemma-3-1b", api_name="/analyze"))
    assert "gated" in msg and "HF_TOKEN" in msg
    assert "Traceback" not in msg
    # The bundled model is unaffected.
    assert stats(client)["models"][MODEL] == "ready"


@pytest.mark.parametrize(
    "layer, head, bos, expected",
    [
        (99, "mean", "gray", "Layer 99 is out of range: this model has layers 0-17."),
        (-1, "mean", "gray", "Layer -1 is out of range: this model has layers 0-17."),
        (18, "mean", "gray", "Layer 18 is out of range: this model has layers 0-17."),
        (0, "7", "gray", "Head 7 is out of range: this model has heads 0-3."),
        (0, "Head 7", "gray", "Head 7 is out of range: this model has heads 0-3."),
        (0, "median", "gray", "Head must be 'mean', 'max' or a head number, not 'median'."),
        (0, "mean", "purple", "BOS mode must be one of gray, hide, exclude."),
        (0, "mean", "gray", "Measure must be one of raw, value, rollout, not 'saliency'."),
    ],
    ids=["layer-99", "layer-neg", "layer-18", "head-7", "head-label-7", "head-word", "bos", "measure"],
)
def test_bad_view_is_a_readable_error(client, thirsty, layer, head, bos, expected):
    before = stats(client)["forward_calls"]
    measure = "saliency" if "Measure" in expected else "raw"
    msg = api_error(lambda: client.predict(THIRSTY, MODEL, layer, head, bos, measure, api_name="/view"))
    assert msg == expected
    assert stats(client)["forward_calls"] == before
