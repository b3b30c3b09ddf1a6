"""The registry, loading, and the per-layer facts (global/local, window) the views rely on."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import attn.model.loading as models
import attn.model.registry as registry
from attn.compute.forward import analyze
from attn.errors import ModelUnavailableError, UnknownModelError
from attn.model.loading import LoadedModel
from attn.model.registry import ModelSpec
from helpers import SETTINGS

FAKE_TOKEN = "hf_FAKE0123456789abcdefSECRET"


def global_layers(loaded: LoadedModel) -> list[int]:
    return [i for i, kind in enumerate(loaded.layer_types) if kind == "global"]


# ---- registry ------------------------------------------------------------------------


def test_registry_offers_the_bundled_model_and_gemma_3_1b():
    assert registry.BUNDLED == "gemma-3-270m"
    assert registry.REGISTRY["gemma-3-270m"].source == "bundled"
    spec = registry.REGISTRY["gemma-3-1b"]
    assert (spec.source, spec.hf_id, spec.needs_token) == ("hub", "google/gemma-3-1b-pt", True)


@pytest.mark.parametrize("name", ["gpt-5", "", "Gemma-3-270M", None, ["gemma-3-270m"]])
def test_unknown_model_name_raises_unknown_model_error_listing_the_choices(name):
    with pytest.raises(UnknownModelError) as info:
        registry.get_spec(name)
    message = str(info.value)
    assert "gemma-3-270m" in message and "gemma-3-1b" in message
    assert not message.startswith(("'", '"'))  # shown as text, not as a KeyError repr


def test_load_rejects_an_unknown_name_before_loading_anything():
    with pytest.raises(UnknownModelError, match="Choose one of"):
        models.load("meta-llama/Llama-3-8B", SETTINGS)


# ---- layer pattern -------------------------------------------------------------------


def test_bundled_model_marks_every_sixth_layer_global(bundled):
    assert bundled.num_layers == 18
    assert global_layers(bundled) == [5, 11, 17]
    assert bundled.sliding_window == 512
    assert bundled.num_heads == 4


def test_registry_facts_match_the_loaded_bundled_model(bundled):
    spec = registry.REGISTRY[registry.BUNDLED]
    assert (spec.num_layers, spec.num_heads) == (bundled.num_layers, bundled.num_heads)
    assert bundled.default_layer == spec.default_layer
    assert 0 <= spec.default_layer < bundled.num_layers


def test_registry_facts_for_gemma_3_1b_match_its_layer_pattern(gemma3_26):
    spec = registry.REGISTRY["gemma-3-1b"]
    assert (spec.num_layers, spec.num_heads) == (gemma3_26.num_layers, gemma3_26.num_heads)
    assert 0 <= spec.default_layer < spec.num_layers


def test_gemma_3_1b_layer_pattern_marks_layers_5_11_17_23_global(gemma3_26):
    assert gemma3_26.num_layers == 26
    assert global_layers(gemma3_26) == [5, 11, 17, 23]
    assert all(kind == "local" for i, kind in enumerate(gemma3_26.layer_types) if i not in (5, 11, 17, 23))
    assert gemma3_26.sliding_window == 512
    assert gemma3_26.num_heads == 4


def test_layer_types_follow_the_config_not_a_fixed_period(tiny):
    types = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    config = tiny.gemma3_config(vocab_size=64, num_layers=4, layer_types=types, window=7)
    assert models.config_layer_types(config) == ["local", "global", "global", "local"]


def test_a_config_without_a_sliding_window_is_all_global(tiny):
    config = tiny.gemma3_config(vocab_size=64, num_layers=6)
    config.sliding_window = None
    assert models.config_layer_types(config) == ["global"] * 6


def test_a_window_without_a_layer_pattern_makes_every_layer_local():
    from types import SimpleNamespace

    mistral_like = SimpleNamespace(num_hidden_layers=4, sliding_window=4096)
    assert models.config_layer_types(mistral_like) == ["local"] * 4
    qwen_like = SimpleNamespace(num_hidden_layers=4, sliding_window=4096, use_sliding_window=False)
    assert models.config_layer_types(qwen_like) == ["global"] * 4


def test_llama_and_gpt2_are_all_global_with_no_window(llama, gpt2):
    for loaded in (llama, gpt2):
        assert loaded.layer_types == ["global"] * loaded.num_layers
        assert loaded.num_layers == 3
        assert loaded.sliding_window is None


# ---- wrap ----------------------------------------------------------------------------


def test_wrap_forces_eager_attention(tiny, bpe_tokenizer):
    model = tiny.gpt2(bpe_tokenizer)
    model.set_attn_implementation("sdpa")
    loaded = LoadedModel.wrap("m", model, bpe_tokenizer)
    assert loaded.model.config._attn_implementation == "eager"
    assert not loaded.model.training


def test_wrap_records_device_dtype_and_clamps_the_default_layer(tiny, bpe_tokenizer):
    loaded = LoadedModel.wrap("m", tiny.gpt2(bpe_tokenizer), bpe_tokenizer, default_layer=99)
    assert (loaded.device, loaded.dtype) == ("cpu", "float32")
    assert loaded.default_layer == loaded.num_layers - 1


def test_wrap_refuses_a_model_that_returns_no_attention_weights(tiny, bpe_tokenizer):
    model = tiny.gpt2(bpe_tokenizer)

    def drop_attentions(module, args, output):
        output.attentions = None
        return output

    model.register_forward_hook(drop_attentions)
    with pytest.raises(ModelUnavailableError, match="attention weights"):
        LoadedModel.wrap("blind", model, bpe_tokenizer)


# ---- hub loading (the Gemma 3 1B code path) ------------------------------------------


def test_load_spec_loads_a_hub_style_checkpoint_from_a_local_directory(
    tmp_path, tiny, bpe_tokenizer
):
    model = tiny.gemma3(vocab_size=len(bpe_tokenizer), num_layers=8, seed=1)
    model.save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    spec = ModelSpec(
        name="local-gemma", label="Local Gemma", source="hub", hf_id=str(tmp_path),
        needs_token=False, default_layer=6,
    )
    loaded = models.load_spec(spec, replace(SETTINGS, device="cpu"))

    assert loaded.name == "local-gemma"
    assert loaded.source == str(tmp_path)
    assert loaded.layer_types == ["local"] * 5 + ["global"] + ["local"] * 2
    assert loaded.default_layer == 6
    result = analyze(loaded, "The quick brown fox")
    expected = analyze(LoadedModel.wrap("in-memory", model, bpe_tokenizer), "The quick brown fox")
    assert result.next_token_id == expected.next_token_id
    torch.testing.assert_close(result.last_row, expected.last_row)  # the very weights saved


def test_gated_model_without_hf_token_names_the_missing_secret():
    with pytest.raises(ModelUnavailableError, match="HF_TOKEN"):
        models.load("gemma-3-1b", replace(SETTINGS, hf_token=None))


def test_gated_model_offline_fails_cleanly_without_echoing_the_token(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time, which has already happened.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as info:
        models.load("gemma-3-1b", replace(SETTINGS, hf_token=FAKE_TOKEN))
    assert "google/gemma-3-1b-pt" in str(info.value)
    assert FAKE_TOKEN not in str(info.value)


def test_a_load_error_that_quotes_the_token_is_redacted(monkeypatch):
    from transformers import AutoTokenizer

    def leaky(*args, **kwargs):
        raise OSError(f"401 Unauthorized for token {FAKE_TOKEN}")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", leaky)
    with pytest.raises(ModelUnavailableError) as info:
        models.load("gemma-3-1b", replace(SETTINGS, hf_token=FAKE_TOKEN))
    assert FAKE_TOKEN not in str(info.value)
    assert "401 Unauthorized for token ***" in str(info.value)


# ---- device --------------------------------------------------------------------------


def test_cpu_runs_in_float32():
    assert models.pick_device(replace(SETTINGS, device="cpu")) == ("cpu", torch.float32)


def test_cuda_runs_in_bfloat16_never_float16():
    assert models.pick_device(replace(SETTINGS, device="cuda")) == ("cuda", torch.bfloat16)


def test_without_a_gpu_the_default_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.pick_device(replace(SETTINGS, device=None)) == ("cpu", torch.float32)


def test_on_zerogpu_the_default_is_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the GPU comes with each call
    assert models.pick_device(replace(SETTINGS, device=None, zero_gpu=True)) == ("cuda", torch.bfloat16)
