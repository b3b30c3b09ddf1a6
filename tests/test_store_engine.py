"""Answers that outlive a restart (issue 21): what the engine stored is served by the next
process without its model (no load, no forward pass, no GPU call), keyed by the model's
identity; the settings that place and bound the store; the records shipped for the presets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from attn.compute import stored
from attn.compute.analysis import Analysis
from attn.compute.store import SHIPPED, Store
from attn.errors import PromptError
from attn.model import identity
from attn.model.registry import BUNDLED
from attn.settings import Settings
from helpers import ARTIST, CACHE_DIR, EXAMPLES, PRESETS, THIRSTY, store_engine

HUNGRY_B = THIRSTY.replace("thirsty", "hungry")


class NoModel:
    """A loader for a process whose model must not be needed: it blocks until released
    (as a model still loading does) and counts who asked."""

    def __init__(self, model):
        self.model, self.calls, self.gate = model, 0, threading.Event()

    def __call__(self, name, progress):
        self.calls += 1
        progress("Loading")
        assert self.gate.wait(30)
        return self.model


class Counting:
    """An accelerator (spaces.GPU's place) that counts the model calls sent through it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn):
        def run(*args):
            self.calls += 1
            return fn(*args)

        return run


@pytest.fixture
def before_restart(gpt2, tmp_path):
    """A process that analysed, ablated, continued and compared, storing each answer."""
    engine = store_engine(gpt2, tmp_path)
    answers = {"analysis": engine.analyze(THIRSTY, BUNDLED).to_json(),
               "ablation": engine.ablate(THIRSTY, BUNDLED).to_json(),
               "generation": engine.generate(THIRSTY, BUNDLED, 3).to_json(),
               "comparison": engine.compare(THIRSTY, HUNGRY_B, BUNDLED).to_json()}
    return answers


def test_a_stored_answer_is_served_without_waiting_for_the_model(gpt2, tmp_path, before_restart):
    loader = NoModel(gpt2)
    engine = store_engine(loader, tmp_path)
    assert engine.analyze(THIRSTY, BUNDLED).to_json() == before_restart["analysis"]
    assert engine.ablate(THIRSTY, BUNDLED).to_json() == before_restart["ablation"]
    assert engine.generate(THIRSTY, BUNDLED, 3).to_json() == before_restart["generation"]
    assert engine.compare(THIRSTY, HUNGRY_B, BUNDLED).to_json() == before_restart["comparison"]
    assert loader.calls == 0 and engine.status(BUNDLED)[0] == "not loaded"
    assert (engine.forward_calls, engine.ablation_calls, engine.generate_calls) == (0, 0, 0)
    stats = engine.stored.stats()
    assert stats.hits == 4 and stats.misses == 0


def test_a_stored_answer_costs_no_gpu_call(gpt2, tmp_path, before_restart):
    gpu = Counting()
    engine = store_engine(gpt2, tmp_path, accelerator=gpu)
    engine.analyze(THIRSTY, BUNDLED)
    engine.ablate(THIRSTY, BUNDLED)
    engine.generate(THIRSTY, BUNDLED, 3)
    engine.compare(THIRSTY, HUNGRY_B, BUNDLED)
    assert gpu.calls == 0
    engine.analyze(THIRSTY + " again", BUNDLED)  # a new prompt: one call
    assert gpu.calls == 1


def test_what_is_not_stored_waits_for_the_model_as_before(gpt2, tmp_path, before_restart):
    loader = NoModel(gpt2)
    engine = store_engine(loader, tmp_path)
    loader.gate.set()
    engine.analyze("A prompt nobody typed before", BUNDLED)
    assert loader.calls == 1 and engine.forward_calls == 1
    assert engine.generate(THIRSTY, BUNDLED, 4).continuation.max_new_tokens == 4  # other options: computed
    assert engine.generate_calls == 1


def test_has_answer_says_what_needs_no_model_and_loads_nothing(gpt2, tmp_path, before_restart):
    loader = NoModel(gpt2)
    engine = store_engine(loader, tmp_path)
    assert engine.has_answer(THIRSTY, BUNDLED)
    assert engine.has_answer(THIRSTY, BUNDLED, compare=HUNGRY_B)
    assert engine.has_answer(THIRSTY, BUNDLED, max_new_tokens=3)
    assert not engine.has_answer(THIRSTY, BUNDLED, max_new_tokens=4)
    assert not engine.has_answer("Never typed", BUNDLED)
    assert not engine.has_answer(THIRSTY, "no-such-model")
    assert not engine.has_answer(THIRSTY, BUNDLED, max_new_tokens=99)
    assert loader.calls == 0


def test_the_views_find_a_stored_ablation(gpt2, tmp_path, before_restart):
    engine = store_engine(NoModel(gpt2), tmp_path)
    assert engine.cached_ablation(THIRSTY, BUNDLED).to_json() == before_restart["ablation"]
    assert engine.cached_ablation(HUNGRY_B, BUNDLED) is None


def test_a_stored_answer_over_this_processs_token_limit_is_refused_as_before(gpt2, tmp_path, before_restart):
    engine = store_engine(gpt2, tmp_path, max_tokens=5)
    with pytest.raises(PromptError, match="the limit is 5 tokens"):
        engine.analyze(THIRSTY, BUNDLED)
    assert engine.forward_calls == 0


def test_an_engine_without_a_store_writes_nothing(gpt2, tmp_path):
    from helpers import engine_with

    engine = engine_with(gpt2, store=Store(tmp_path, 1 << 20))  # no identity: no key, no store
    engine.analyze(THIRSTY, BUNDLED)
    assert engine.stored.stats() is None and not any(tmp_path.iterdir())


# ---- settings and identity --------------------------------------------------------------------------


def test_the_store_sits_in_the_cache_dir_unless_told_otherwise():
    assert Settings.from_env({"ATTN_CACHE_DIR": "/data/c"}).store_dir == Path("/data/c/analyses")
    assert Settings.from_env({"ATTN_STORE_DIR": "/data/s"}).store_dir == Path("/data/s")
    assert Settings.from_env({"ATTN_STORE_DIR": ""}).store_dir is None  # off
    assert Settings.from_env({}).store_bytes == 512 << 20
    assert Settings.from_env({"ATTN_STORE_BYTES": "1000"}).store_bytes == 1000
    assert Settings().store_dir is None  # a Settings built in code touches no disk store


def test_the_planned_device_is_where_the_model_loads(bundled):
    planned = identity.identify(BUNDLED, Settings(device=None))
    loaded = identity.identify(BUNDLED, Settings(), bundled)
    if bundled.device == "cpu" and Settings().device is None:
        assert (planned.device, planned.dtype) == (loaded.device, loaded.dtype)
    assert loaded.dtype == bundled.dtype and loaded.digest == planned.digest


def test_the_identity_is_known_while_the_background_load_is_half_way_through_importing_torch(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # no .cuda yet
    assert identity.identify(BUNDLED, Settings()).dtype in ("float32", "bfloat16")


def test_the_bundled_models_digest_is_its_ggufs_and_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; from attn.model.identity import identify; from attn.settings import Settings; "
            "i = identify('gemma-3-270m', Settings(device='cpu')); "
            "print(i.digest, i.dtype, i.device, 'torch' in sys.modules, 'transformers' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    from attn.model.bundled import _gguf_module

    assert out.stdout.split() == [f"gguf-sha256:{_gguf_module().EXPECTED_SHA256}", "float32", "cpu", "False", "False"]


# ---- the records shipped for the presets ------------------------------------------------------------


SHIPPED_IDENTITY = identity.identify(BUNDLED, Settings(device="cpu"))


@pytest.mark.parametrize("prompt", PRESETS, ids=[e["name"] for e in EXAMPLES])
def test_every_presets_analysis_is_shipped_for_the_bundled_model_on_the_cpu(prompt):
    """Found without the model, verified, for this version of the schema: a schema change
    without `python -m attn warm --store attn/shipped --exact --no-ablate` fails here."""
    shipped = Store(None, 1 << 30, [SHIPPED])
    asked = stored.analysis(BUNDLED, prompt)
    found = shipped.get(stored.StoreKey(asked.kind, SHIPPED_IDENTITY, asked.texts, asked.options), Analysis)
    assert found is not None and found.prompt == prompt and shipped.stats().dropped == 0


def test_only_the_presets_analyses_are_shipped_and_they_are_small():
    """Not their ablations: "Check by removing tokens" is the lab's question for the student
    to ask, so its bars appear when asked (a second or two of CPU), not before."""
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(PRESETS)  # a record and an index entry per preset
    assert sum(p.stat().st_size for p in files) < 256 << 10


@pytest.mark.app
def test_the_page_comes_up_with_the_first_preset_drawn_from_the_shipped_records(tmp_path):
    import app

    settings = Settings(cache_dir=CACHE_DIR, device="cpu", store_dir=tmp_path, prefetch=False)
    page = app.create_page(settings)
    ui = page.ui
    assert isinstance(ui.shown.value.analysis, Analysis) and ui.shown.value.analysis.prompt == PRESETS[0]
    assert ui.figure.value.startswith("<") and "data:image/" in ui.figure.value
    assert " water" not in ui.summary.value and PRESETS[0] in ui.summary.value
    assert "attn-tok" in ui.tokens_view.value and "attn-heatmap" in ui.overview.value
    assert ui.layer_info.value.startswith("**Layer 12** of 17")
    assert "What to look for" in ui.look_for.value and "prompt=" in ui.link_query.value
    assert page.engine.status(BUNDLED)[0] == "not loaded" and page.engine.forward_calls == 0
    assert page.engine.stored.stats().hits == 1  # the first sight, served from the shipped record


@pytest.mark.app
def test_a_stored_prompt_is_analysed_on_the_page_without_waiting_for_the_model(gpt2, tmp_path, before_restart):
    import app

    loader = NoModel(gpt2)
    page = app.create_page(Settings(models=(BUNDLED,), prefetch=False), engine=store_engine(loader, tmp_path))
    result = page.handlers.on_analyze(THIRSTY, BUNDLED, 12, "Mean over heads", progress=lambda *a, **k: None)
    assert result[page.ui.shown].analysis.to_json() == before_restart["analysis"]
    assert loader.calls == 0


@pytest.mark.app
def test_a_link_replaces_the_first_sight_in_the_event_that_sets_its_controls(tmp_path):
    """Drawn from the store when it holds the link's answer; cleared when that needs the
    model, so the first preset is never shown beside another prompt."""
    import app

    class Request:
        query_params = {"prompt": "A prompt never analysed", "layer": "3"}

    page = app.create_page(Settings(cache_dir=CACHE_DIR, device="cpu", store_dir=tmp_path, prefetch=False))
    ui = page.ui
    cleared = page.handlers.on_load(Request())
    assert cleared[ui.shown] is None and cleared[ui.figure] == "" and "Analyzing this prompt" in cleared[ui.summary]
    assert cleared[ui.autorun] is True  # analysed next, with the model's progress
    Request.query_params = {"prompt": ARTIST, "layer": "3", "head": "1", "bos": "hide"}  # a shipped preset
    drawn = page.handlers.on_load(Request())
    assert drawn[ui.shown].analysis.prompt == ARTIST and drawn[ui.autorun] is False
    assert set(drawn) <= set(ui.link_outputs) and set(cleared) <= set(ui.link_outputs)  # Gradio refuses others
    assert drawn[ui.layer_info].startswith("**Layer 3** of 17") and "head 1" in drawn[ui.layer_info]
    assert "data:image/" in drawn[ui.figure] and "layer=3" in drawn[ui.link_query]
    assert "Attention crosses sentence boundaries" in drawn[ui.look_for]  # the artist's hint, not the first sight's
    assert cleared[ui.look_for] == ""
    assert page.engine.status(BUNDLED)[0] == "not loaded" and page.engine.forward_calls == 0


def test_a_delayed_background_load_says_loading_and_a_request_that_needs_the_model_loads_it_at_once(gpt2,
                                                                                                   tmp_path):
    """app.main starts the load after the server's first requests (serve, then load)."""
    loads = []
    engine = store_engine(lambda name, progress: loads.append(name) or gpt2, tmp_path)
    timer = engine.preload(BUNDLED, after=60)
    try:
        assert engine.status(BUNDLED) == ("loading", "Starting") and loads == []
        engine.analyze("A new prompt", BUNDLED)
        assert loads == [BUNDLED] and engine.is_ready(BUNDLED)
    finally:
        timer.cancel()


def test_a_preload_without_delay_starts_a_scheduled_load_now(gpt2, tmp_path):
    """What the page does while a request waits for the model (Handlers._wait_for_model)."""
    loads = []
    engine = store_engine(lambda name, progress: loads.append(name) or gpt2, tmp_path)
    timer = engine.preload(BUNDLED, after=60)
    engine.preload(BUNDLED).join(timeout=30)
    assert loads == [BUNDLED] and engine.status(BUNDLED)[0] == "ready" and timer.finished.is_set()


def test_the_views_ask_the_disk_once_for_an_ablation_it_does_not_have(gpt2, tmp_path, monkeypatch):
    """A slider move redraws the ablation bars when there are some: on a network volume a
    lookup per move would cost a round trip each."""
    engine = store_engine(gpt2, tmp_path)
    engine.analyze(THIRSTY, BUNDLED)
    reads = []
    real = Store._read
    monkeypatch.setattr(Store, "_read", lambda self, *args, **kwargs: reads.append(1) or real(self, *args, **kwargs))
    assert engine.cached_ablation(THIRSTY, BUNDLED) is None and engine.cached_ablation(THIRSTY, BUNDLED) is None
    assert len(reads) == 1
    engine.ablate(THIRSTY, BUNDLED)  # computed and stored by this process: found from now on
    assert store_engine(gpt2, tmp_path).cached_ablation(THIRSTY, BUNDLED) is not None


def test_on_zerogpu_the_bundled_model_is_keyed_as_it_runs_on_the_cpu_and_the_gpu_models_on_cuda():
    settings = Settings(zero_gpu=True)  # the 270M runs on the Space's CPU, Gemma 3 1B on a GPU
    assert identity.planned_device(settings, BUNDLED) == ("cpu", "float32")
    assert identity.planned_device(settings, "gemma-3-1b") == ("cuda", "bfloat16")
    shipped = identity.identify(BUNDLED, settings)
    assert (shipped.device, shipped.dtype) == (SHIPPED_IDENTITY.device, SHIPPED_IDENTITY.dtype)  # presets answer
