"""Engine: named models loaded once, analyses cached, bad requests refused with reasons."""

from __future__ import annotations

import threading

import pytest

import attn.compute.forward
from attn.compute.engine import Engine
from attn.errors import ModelUnavailableError, PromptError, UnknownModelError
from attn.model.registry import BUNDLED
from helpers import THIRSTY, engine_with


class CountingLoader:
    """A loader that hands out a ready LoadedModel and counts how often it was asked."""

    def __init__(self, loaded, gate: threading.Event | None = None):
        self.loaded = loaded
        self.gate = gate
        self.calls = 0

    def __call__(self, name, progress):
        self.calls += 1
        progress(f"Loading {name}")
        if self.gate is not None:
            assert self.gate.wait(10)
        return self.loaded


@pytest.fixture
def forward_spy(monkeypatch):
    """Counts real forward passes (calls to attn.compute.forward.forward)."""
    calls = []
    real = attn.compute.forward.forward

    def spy(loaded, prompt, encoded, **kwargs):
        calls.append(prompt)
        return real(loaded, prompt, encoded, **kwargs)

    monkeypatch.setattr(attn.compute.forward, "forward", spy)
    return calls


@pytest.fixture
def engine(bundled):
    return engine_with(CountingLoader(bundled))


@pytest.fixture
def tiny_engine(gpt2):
    return engine_with(CountingLoader(gpt2), ["tiny-gpt2"])


# ---- caching -------------------------------------------------------------------------


def test_a_repeated_request_is_served_from_the_cache_without_running_the_model(engine, forward_spy):
    first = engine.analyze(THIRSTY, BUNDLED)
    again = engine.analyze(THIRSTY, BUNDLED)
    assert again is first
    assert engine.forward_calls == 1
    assert forward_spy == [THIRSTY]
    assert engine.cached(THIRSTY, BUNDLED) is first
    assert engine.cache_stats().hits >= 1


def test_a_different_prompt_runs_the_model_again(tiny_engine, forward_spy):
    tiny_engine.analyze("The quick brown fox", "tiny-gpt2")
    tiny_engine.analyze("The lazy dog", "tiny-gpt2")
    assert tiny_engine.forward_calls == 2
    assert tiny_engine.cached("The quick fox", "tiny-gpt2") is None


def test_simultaneous_identical_requests_run_the_model_once(engine, forward_spy):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.analyze(THIRSTY, BUNDLED)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert engine.forward_calls == 1
    assert len(forward_spy) == 1


def test_the_model_is_loaded_once_for_many_requests(gpt2):
    loader = CountingLoader(gpt2)
    engine = engine_with(loader, ["tiny-gpt2"])
    for prompt in ("one", "two", "three"):
        engine.analyze(prompt, "tiny-gpt2")
    assert loader.calls == 1


def test_the_cache_byte_bound_holds_for_real_analyses(gpt2):
    engine = engine_with(CountingLoader(gpt2), ["tiny-gpt2"])
    one = engine.analyze("The quick brown fox jumps", "tiny-gpt2")
    small = engine_with(CountingLoader(gpt2), ["tiny-gpt2"], cache_bytes=int(one.nbytes * 2.5))
    for prompt in ("The quick brown fox jumps", "The lazy dog jumps high", "Attention is all you"):
        small.analyze(prompt, "tiny-gpt2")
        assert small.cache_stats().bytes <= small.cache_stats().max_bytes
    assert small.cache_stats().evictions >= 1


def test_every_model_call_goes_through_the_accelerator_and_nothing_else_does(gpt2):
    """How the app hands spaces.GPU to the engine: each uncached call goes through it, once,
    whatever its kind; cache hits and refused prompts never do."""
    seen = []

    def accelerator(call):
        def on_gpu(job, model_name, *args):
            seen.append((job, model_name))
            return call(job, model_name, *args)
        return on_gpu

    engine = engine_with(CountingLoader(gpt2), ["tiny-gpt2"], accelerator=accelerator)
    engine.analyze("hello there", "tiny-gpt2")
    engine.analyze("hello there", "tiny-gpt2")
    with pytest.raises(PromptError):
        engine.analyze("  ", "tiny-gpt2")
    engine.generate("hello there", "tiny-gpt2", 2)
    engine.ablate("hello there", "tiny-gpt2")  # a few deletions: one batch
    engine.generate("hello there", "tiny-gpt2", 2)
    assert seen == [("forward", "tiny-gpt2"), ("generate", "tiny-gpt2"), ("ablation", "tiny-gpt2")]


class SeenLock:
    """A run lock that says when a call waits on it."""

    def __init__(self):
        self.lock, self.waited = threading.Lock(), threading.Event()

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.waited.set()
            self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()


def two_calls_at_once(engine, monkeypatch, while_first_runs):
    """Analyse two prompts in two threads; the first pass runs until `while_first_runs()` returns."""
    real = attn.compute.forward.forward
    first_inside = threading.Event()

    def forward(loaded, prompt, encoded, **kwargs):
        if prompt == "first prompt":
            first_inside.set()
            assert while_first_runs()
        return real(loaded, prompt, encoded, **kwargs)

    monkeypatch.setattr(attn.compute.forward, "forward", forward)
    first = threading.Thread(target=engine.analyze, args=("first prompt", "tiny-gpt2"))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=engine.analyze, args=("second prompt", "tiny-gpt2"))
    second.start()
    for thread in (first, second):
        thread.join(30)
    return engine.cached("first prompt", "tiny-gpt2"), engine.cached("second prompt", "tiny-gpt2")


def test_a_cpu_models_calls_run_one_at_a_time(gpt2, monkeypatch):
    """In this process, one call per model at a time: bounded memory, no thread thrash."""
    engine = engine_with(CountingLoader(gpt2), ["tiny-gpt2"])
    lock = engine._run_locks["tiny-gpt2"] = SeenLock()
    assert all(two_calls_at_once(engine, monkeypatch, lambda: lock.waited.wait(10)))


def test_a_gpu_models_calls_take_no_lock(gpt2, monkeypatch):
    """Through the accelerator the platform queues and runs calls side by side: the second
    call starts while the first runs."""
    engine = engine_with(CountingLoader(gpt2), ["tiny-gpt2"], accelerator=lambda fn: fn, gpu_models=["tiny-gpt2"])
    engine.model("tiny-gpt2")  # a GPU model loads in the main thread only
    second_inside = threading.Event()
    real = attn.compute.forward.forward

    def spy(loaded, prompt, encoded, **kwargs):
        if prompt == "second prompt":
            second_inside.set()
        return real(loaded, prompt, encoded, **kwargs)

    monkeypatch.setattr(attn.compute.forward, "forward", spy)
    assert all(two_calls_at_once(engine, monkeypatch, lambda: second_inside.wait(10)))
    assert (engine.gpu_calls, engine.cpu_calls) == (2, 0)


# ---- bad requests --------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "], ids=["empty", "spaces", "whitespace"])
def test_a_blank_prompt_is_refused_without_loading_the_model(gpt2, prompt):
    loader = CountingLoader(gpt2)
    engine = engine_with(loader, ["tiny-gpt2"])
    with pytest.raises(PromptError, match="empty"):
        engine.analyze(prompt, "tiny-gpt2")
    assert loader.calls == 0


@pytest.mark.parametrize("prompt", [None, 7, b"Jide"])
def test_a_prompt_that_is_not_text_is_refused(tiny_engine, prompt):
    with pytest.raises(PromptError, match="must be text"):
        tiny_engine.analyze(prompt, "tiny-gpt2")


def test_a_prompt_over_the_token_limit_names_the_limit(bundled):
    engine = engine_with(CountingLoader(bundled), max_tokens=16)
    long = "Jide was thirsty so she went looking for water in the town square and the old well"
    with pytest.raises(PromptError, match="limit is 16 tokens"):
        engine.analyze(long, BUNDLED)
    assert len(engine.cache) == 0  # refusals are not cached
    assert engine.forward_calls == 0  # and cost no forward pass
    assert engine.analyze(THIRSTY, BUNDLED).num_tokens <= 16


def test_an_unknown_model_name_raises_unknown_model_error(tiny_engine):
    with pytest.raises(UnknownModelError, match="Choose one of"):
        tiny_engine.analyze(THIRSTY, "gpt-5")


def test_a_registered_model_that_is_not_enabled_is_refused(gpt2):
    loader = CountingLoader(gpt2)
    engine = engine_with(loader)
    with pytest.raises(UnknownModelError, match="not enabled"):
        engine.analyze(THIRSTY, "gemma-3-1b")
    assert loader.calls == 0


def test_the_default_engine_offers_every_registered_model():
    from attn.model.registry import REGISTRY
    from attn.settings import Settings

    engine = Engine.for_settings(Settings())
    assert engine.model_names == list(REGISTRY)


# ---- load failures and status --------------------------------------------------------


def test_a_load_failure_is_reported_with_its_reason_and_not_retried():
    calls = []

    def broken(name, progress):
        calls.append(name)
        raise RuntimeError("disk on fire")

    engine = engine_with(broken)
    for _ in range(2):
        with pytest.raises(ModelUnavailableError, match="disk on fire"):
            engine.analyze(THIRSTY, BUNDLED)
    assert calls == [BUNDLED]
    state, detail = engine.status(BUNDLED)
    assert state == "error" and "disk on fire" in detail


def test_a_model_unavailable_message_reaches_the_user_verbatim():
    def gated(name, progress):
        raise ModelUnavailableError("set the HF_TOKEN secret")

    engine = engine_with(gated, ["gemma-3-1b"])
    with pytest.raises(ModelUnavailableError) as info:
        engine.model("gemma-3-1b")
    assert str(info.value) == "set the HF_TOKEN secret"


def test_status_goes_from_not_loaded_to_loading_to_ready(gpt2):
    gate = threading.Event()
    engine = engine_with(CountingLoader(gpt2, gate=gate), ["tiny-gpt2"])
    assert engine.status("tiny-gpt2") == ("not loaded", "")
    assert not engine.is_ready("tiny-gpt2")

    thread = engine.preload("tiny-gpt2")
    for _ in range(500):  # the loader reports its progress, then waits at the gate
        if engine.status("tiny-gpt2") == ("loading", "Loading tiny-gpt2"):
            break
        threading.Event().wait(0.01)
    assert engine.status("tiny-gpt2") == ("loading", "Loading tiny-gpt2")
    assert not engine.is_ready("tiny-gpt2")

    gate.set()
    thread.join(10)
    state, detail = engine.status("tiny-gpt2")
    assert state == "ready" and detail.startswith("3 layers, 4 heads, float32")
    assert engine.is_ready("tiny-gpt2")


def test_status_of_an_unknown_model_raises(tiny_engine):
    with pytest.raises(UnknownModelError):
        tiny_engine.status("nope")
