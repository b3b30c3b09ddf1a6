"""Shared fixtures: the real bundled model (loaded once) and tiny random-weight models.

The bundled Gemma 3 270M is converted from its GGUF into $ATTN_CACHE_DIR on first use
(seconds, once); later loads read the verified cache. A caller's
ATTN_CACHE_DIR is respected; otherwise the user's cache (~/.cache/attn-demo) is used.

The numbers the tests check (" water", 1e-4 agreement) are float32 numbers, so the
bundled model is loaded on the CPU unless the caller sets ATTN_DEVICE; float32-only
tests skip when it was loaded in another dtype (ATTN_DEVICE=cuda gives bfloat16).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import attn.compute.cache
import attn.model.loading
import attn.model.registry
from attn.model.loading import LoadedModel
from helpers import CACHE_DIR, SETTINGS, THIRSTY, unavailable

ROOT = Path(__file__).resolve().parents[1]  # on sys.path through pyproject.toml's pythonpath

# The app subprocesses the tests start find the converted model where this process does.
os.environ.setdefault("ATTN_CACHE_DIR", str(CACHE_DIR))

# One torch thread for the models run in this process (subprocesses such as app.py keep their
# defaults). The tests' forward passes are small, tens of tokens: on a 2-core machine a second
# thread saves nothing when it is idle, and when other work shares it the two threads wait for
# each other at every operation (an analysis of THIRSTY: 0.5 s on one thread, 2-4 s on two at
# a load of 3). OMP_NUM_THREADS, when the caller sets it, decides instead.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


# 50 x 12 tokens + BOS = 601 tokens: longer than Gemma 3's 512-token sliding window.
LONG_PROMPT = " ".join(["The cat sat on the mat and looked at the bird."] * 50)
GEMMA_1B_LAYER_TYPES = [
    "full_attention" if i % 6 == 5 else "sliding_attention" for i in range(26)
]
BPE_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need, said the paper.",
    "Jide was thirsty so she went looking for water.",
    "A small model reads a small prompt, token by token.",
]


def pytest_collection_modifyitems(config, items):
    """Mark what a test needs from the fixtures it uses (directly or through another fixture):
    `app` for the app.py subprocess, `browser` (and `app`) for chromium. The markers are
    declared in pyproject.toml; `-m "not browser and not app and not slow"` is the fast subset."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
        if "app" in names or "browser" in names:
            item.add_marker(pytest.mark.app)


@pytest.fixture(scope="session")
def bundled() -> LoadedModel:
    """The real bundled Gemma 3 270M, loaded once for the whole session (on the CPU in
    float32 unless the caller chose a device with ATTN_DEVICE)."""
    return attn.model.loading.load(attn.model.registry.BUNDLED, SETTINGS)


@pytest.fixture
def on_cpu(monkeypatch):
    """Load models on the CPU in float32 for this test, whatever machine runs it."""
    monkeypatch.setenv("ATTN_DEVICE", "cpu")


@pytest.fixture
def parked(monkeypatch) -> threading.Semaphore:
    """Released once for each thread that waits for another thread's computation of its
    key (ByteLRU's single flight) instead of computing: a test can hold a computation until
    every other request has arrived and is waiting, with no sleep. A waiter is seen on the
    one Event a flight is finished by, so nothing else about the cache changes."""
    arrived = threading.Semaphore(0)

    class SeenEvent(threading.Event):
        def wait(self, timeout=None):
            arrived.release()
            return super().wait(timeout)

    class SeenFlight(attn.compute.cache._Flight):
        def __init__(self):
            super().__init__()
            self.done = SeenEvent()

    monkeypatch.setattr(attn.compute.cache, "_Flight", SeenFlight)
    return arrived


@pytest.fixture(scope="session")
def thirsty_analysis(bundled):
    """The bundled model's analysis of THIRSTY, made once for every test that only reads it
    (each analysis is a forward pass and the logit lens: about half a second of CPU)."""
    from attn.compute.forward import analyze

    return analyze(bundled, THIRSTY)


@pytest.fixture(scope="session")
def bundled_f32(bundled) -> LoadedModel:
    if bundled.dtype != "float32":
        pytest.skip(f"needs the bundled model in float32 (loaded as {bundled.dtype})")
    return bundled


@pytest.fixture(scope="session")
def gemma_tokenizer(bundled):
    """The bundled model's Gemma tokenizer (vocab 262144), reused by tiny random models."""
    return bundled.tokenizer


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A tiny byte-level BPE tokenizer trained here, GPT-2 style (<|endoftext|> = BOS = EOS)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        BPE_CORPUS * 4, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def gemma3_config(*, vocab_size: int, num_layers: int = 26, layer_types=None, window: int = 512):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=window,
        layer_types=layer_types or GEMMA_1B_LAYER_TYPES[:num_layers],
        max_position_embeddings=2048,
    )


def tiny_gemma3(*, vocab_size: int, num_layers: int = 26, layer_types=None, window: int = 512, seed: int = 0):
    """A random-weight Gemma3ForCausalLM (hidden 32, 4 heads sharing 1 kv head, head_dim 16)."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    config = gemma3_config(
        vocab_size=vocab_size, num_layers=num_layers, layer_types=layer_types, window=window
    )
    return Gemma3ForCausalLM(config)


def tiny_llama(*, vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config)


def tiny_gpt2(tokenizer, *, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=3,
        n_head=4,
        n_positions=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="session")
def tiny():
    """Builders for tiny random-weight models and the shared prompts, for tests to use."""
    return SimpleNamespace(
        gemma3=tiny_gemma3,
        gemma3_config=gemma3_config,
        llama=tiny_llama,
        gpt2=tiny_gpt2,
        THIRSTY=THIRSTY,
        LONG_PROMPT=LONG_PROMPT,
        GEMMA_1B_LAYER_TYPES=GEMMA_1B_LAYER_TYPES,
    )


@pytest.fixture(scope="session")
def gemma3_26(gemma_tokenizer) -> LoadedModel:
    """A 26-layer random Gemma 3 with the 1B's layer pattern, wrapped for analysis."""
    model = tiny_gemma3(vocab_size=len(gemma_tokenizer))
    return LoadedModel.wrap("tiny-gemma3-26", model, gemma_tokenizer)


@pytest.fixture(scope="session")
def llama(gemma_tokenizer) -> LoadedModel:
    return LoadedModel.wrap("tiny-llama", tiny_llama(vocab_size=len(gemma_tokenizer)), gemma_tokenizer)


@pytest.fixture(scope="session")
def gpt2(bpe_tokenizer) -> LoadedModel:
    return LoadedModel.wrap("tiny-gpt2", tiny_gpt2(bpe_tokenizer), bpe_tokenizer)


@pytest.fixture(scope="session")
def app():
    """`python app.py` as a real subprocess on a free port, shared by every module that
    asks for it (started on first use, stopped at the end of the session)."""
    import app_server

    server = app_server.shared_app()
    yield server
    app_server.release()


CHROMIUM = os.environ.get("ATTN_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright. Without it the browser tests skip, unless
    ATTN_REQUIRE_BROWSER=1 (as in CI) makes that a failure."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium, or set ATTN_CHROMIUM)")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    except Exception as exc:
        pw.stop()
        unavailable(f"chromium at {CHROMIUM} did not start: {exc}")
    yield b
    b.close()
    pw.stop()
