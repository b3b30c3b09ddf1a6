"""The app on ZeroGPU, through spaces' own code against a fake platform (bench/fake_spaces.py):
forked workers, pickled arguments and results, the queue, quotas, per-thread cuda.

The page is built by app.create_page as on a Space (SPACES_ZERO_GPU on): Gemma 3 1B, the GPU
model, is placed on (emulated) cuda in the main thread; the bundled 270M stays on the CPU.
Both are stood in for by the bundled model's weights (loaded once), so a "1B" answer can be
checked against the in-process one. Visitors are the platform's: `platform.visitor(name)`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch

import attn.compute.ablation
import attn.compute.forward
import attn.compute.generation
from attn.compute import duration
from attn.compute.jobs import Work
from attn.errors import AnalysisFailedError, GpuFaultError, GpuRefusedError, IntegrityError
from attn.model import loading
from attn.model.registry import BUNDLED, REGISTRY
from attn.settings import HUB_MODEL
from helpers import ARTIST, HUNGRY, SETTINGS, THIRSTY, engine_with, wait_until

pytestmark = pytest.mark.app  # gradio, and forks of this process

HEAD = "Mean over heads"


@pytest.fixture
def platform(monkeypatch):
    from bench import fake_spaces

    platform = fake_spaces.install(monkeypatch, fake_spaces.FakePlatform(queue_timeout_s=60))
    yield platform
    fake_spaces.uninstall(platform)


@pytest.fixture
def page(platform, bundled_f32, monkeypatch):
    return build_page(bundled_f32, monkeypatch)


def build_page(bundled_f32, monkeypatch):
    """The app's page on ZeroGPU: both models stood in for by the bundled weights."""
    import app

    def stand_in(*args):
        return bundled_f32.model, bundled_f32.tokenizer

    monkeypatch.setattr(loading, "_load_hub", stand_in)
    monkeypatch.setattr(loading, "_load_bundled", stand_in)
    return app.create_page(replace(SETTINGS, device=None, zero_gpu=True, prefetch=False, default_model=HUB_MODEL))


def analyze(page, prompt, model=HUB_MODEL, **options) -> dict:
    return page.handlers.on_analyze(prompt, model, 12, HEAD, None, **options)


def shown(out: dict, page):
    return out[page.ui.shown]


def stats(page) -> dict:
    return page.api.stats()


def asked(work: Work) -> int:
    """What the platform sees requested for this work: our duration times its factor."""
    from bench import fake_spaces

    return round(duration.gpu_seconds(work) * fake_spaces.DURATION_FACTOR)


# ---- one GPU call per action ---------------------------------------------------------------


def test_an_analysis_is_one_gpu_call_run_in_a_forked_worker(page, platform, thirsty_analysis):
    with platform.visitor("ana"):
        out = analyze(page, THIRSTY)
    analysis = shown(out, page).analysis
    [call] = platform.requests
    assert call.answer == "granted" and call.visitor == "ana"
    assert platform.pid(call) not in (None, os.getpid())  # pickled there and back
    assert analysis.next_token == " water"
    np.testing.assert_allclose(analysis.last_row, thirsty_analysis.last_row, rtol=0, atol=1e-6)


def test_the_duration_is_asked_for_each_call_from_its_arguments(page, platform):
    with platform.visitor("ana"):
        short = shown(analyze(page, THIRSTY), page).analysis
        long = shown(analyze(page, ARTIST), page).analysis
    first, second = platform.requests
    assert first.seconds == asked(Work("forward", short.num_tokens))
    assert second.seconds == asked(Work("forward", long.num_tokens))
    assert stats(page)["gpu_seconds_requested"] == sum(duration.gpu_seconds(Work("forward", a.num_tokens))
                                                       for a in (short, long))


@pytest.mark.parametrize("action", ["preset", "compare", "continue", "ablate"])
def test_each_action_is_one_gpu_call(page, platform, monkeypatch, action):
    """A preset's analysis, a comparison of two new prompts (both analyses and the cross
    probabilities), a continuation, and a whole ablation whose deletions need three batches:
    one request to the platform each."""
    monkeypatch.setattr(attn.compute.ablation, "BATCH_TOKENS", 40)  # 9 deletions of 9 tokens: 3 batches
    with platform.visitor("ana"):
        if action == "preset":
            analyze(page, page.handlers.preset(1)(HUB_MODEL)[page.ui.prompt])
        elif action == "compare":
            analyze(page, HUNGRY, compare_on=True, prompt_b=THIRSTY)
        elif action == "continue":
            analyze(page, THIRSTY, n_new=4)
        else:
            held = shown(analyze(page, THIRSTY), page)
            before = len(platform.requests)
            page.handlers.on_ablate(held)
            assert len(platform.requests) == before + 1
            assert page.engine.cached_ablation(THIRSTY, HUB_MODEL) is not None
            return
    assert [r.answer for r in platform.requests] == ["granted"]
    assert stats(page)["gpu_calls"] == 1 and stats(page)["cpu_calls"] == 0


def test_a_comparison_in_one_call_equals_one_made_in_process(page, platform, bundled_f32):
    with platform.visitor("ana"):
        remote = shown(analyze(page, HUNGRY, compare_on=True, prompt_b=THIRSTY), page).comparison
    local = engine_with(bundled_f32).compare(HUNGRY, THIRSTY, BUNDLED)
    assert remote.alignment == local.alignment
    assert remote.p_a_of_b_next == pytest.approx(local.p_a_of_b_next, abs=1e-6)
    assert remote.p_b_of_a_next == pytest.approx(local.p_b_of_a_next, abs=1e-6)
    assert page.engine.cached(HUNGRY, HUB_MODEL) is remote.a  # its analyses are cached like any other


def test_an_ablation_looped_in_one_call_equals_one_made_batch_by_batch_in_process(page, platform, monkeypatch,
                                                                                  bundled_f32):
    monkeypatch.setattr(attn.compute.ablation, "BATCH_TOKENS", 40)
    with platform.visitor("ana"):
        remote = page.engine.ablate(THIRSTY, HUB_MODEL)
    local = engine_with(bundled_f32).ablate(THIRSTY, BUNDLED)
    assert len(platform.requests) == 2  # the analysis, then every deletion
    np.testing.assert_allclose([d.p_next for d in remote.deletions], [d.p_next for d in local.deletions],
                               rtol=0, atol=1e-6)


def test_views_and_what_is_cached_ask_for_no_gpu(page, platform):
    with platform.visitor("ana"):
        held = shown(analyze(page, THIRSTY), page)
        page.handlers.on_view(held, 0, 3, HEAD, "gray", False, "value", False)
        analyze(page, THIRSTY)
        page.api.analyze(THIRSTY, HUB_MODEL)
        analyze(page, HUNGRY)
    assert len(platform.requests) == 2 == page.engine.forward_calls  # counted here, not in the worker


# ---- the 270M on the CPU ---------------------------------------------------------------------


def test_the_bundled_model_runs_on_the_cpu_in_this_process_and_asks_for_no_gpu(page, platform):
    with platform.visitor("ana"):
        out = analyze(page, THIRSTY, model=BUNDLED)
        page.handlers.on_ablate(shown(out, page))
        analyze(page, HUNGRY, model=BUNDLED, compare_on=True, prompt_b=THIRSTY)
    assert platform.requests == []
    assert stats(page)["gpu_calls"] == 0 and stats(page)["cpu_calls"] >= 3
    assert page.engine.model(BUNDLED).device == "cpu"


# ---- cuda in the main thread only ----------------------------------------------------------


def test_the_gpu_model_is_placed_on_cuda_in_the_main_thread_and_the_cpu_one_never(page, platform):
    assert set(platform.fake_torch.placements) == {threading.main_thread().name}
    placed = platform.fake_torch.placements[threading.main_thread().name]
    with ThreadPoolExecutor(1) as pool:
        pool.submit(page.engine.model, BUNDLED).result()  # loads in a thread, on the CPU
    assert platform.fake_torch.placements[threading.main_thread().name] == placed


def test_cuda_outside_the_main_thread_raises_as_on_zerogpu(platform):
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(RuntimeError, match="Low-level CUDA init .* reached"):
            pool.submit(lambda: torch.zeros(2).to("cuda")).result()


def test_a_gpu_model_is_never_loaded_outside_the_main_thread(platform, bundled_f32):
    """A background load (the page's wait for a model, Engine.preload) would move it to cuda
    from its thread: refused with a reason, before the loader runs."""
    from attn.web import gpu

    loads = []

    def loader(name, progress):
        loads.append(name)
        return bundled_f32

    engine = engine_with(loader, (HUB_MODEL, BUNDLED), accelerator=gpu.accelerator(), gpu_models=[HUB_MODEL])
    engine.preload(HUB_MODEL).join()
    state, reason = engine.status(HUB_MODEL)
    assert (state, loads) == ("error", [])
    assert "when the app started" in reason and REGISTRY[HUB_MODEL].label in reason
    engine.preload(BUNDLED).join()
    assert engine.status(BUNDLED)[0] == "ready" and loads == [BUNDLED]


# ---- no lock across the platform's queue ----------------------------------------------------


def test_a_visitor_in_the_queue_does_not_hold_up_another_on_a_different_prompt(page, platform):
    platform.hold("ana")  # no GPU frees for ana for now
    with ThreadPoolExecutor(1) as pool:
        def ana():
            with platform.visitor("ana"):
                return analyze(page, HUNGRY)

        queued = pool.submit(ana)
        wait_until(lambda: platform.queued("ana") == 1, "ana's call in the queue")
        with platform.visitor("bo"):
            mine = shown(analyze(page, THIRSTY), page).analysis  # the same model, while ana waits
        assert mine.next_token == " water" and not queued.done()
        platform.let_go("ana")
        assert shown(queued.result(timeout=120), page).analysis.prompt == HUNGRY
    assert [r.visitor for r in sorted(platform.granted(), key=lambda r: r.started)] == ["bo", "ana"]


@contextmanager
def bo_waiting_on_ana(page, platform, parked):
    """ana's analysis of THIRSTY held in the platform's queue, and bo asking for the same
    prompt, waiting on ana's call: yields their futures (ana's, bo's)."""
    platform.hold("ana")
    with ThreadPoolExecutor(2) as pool:
        def visit(name):
            with platform.visitor(name):
                return page.engine.analyze(THIRSTY, HUB_MODEL)

        first = pool.submit(visit, "ana")
        wait_until(lambda: platform.queued("ana") == 1, "ana's call in the queue")
        second = pool.submit(visit, "bo")
        assert parked.acquire(timeout=60)  # bo waits on ana's call
        yield first, second


def test_identical_requests_still_make_one_call(page, platform, parked):
    with bo_waiting_on_ana(page, platform, parked) as (first, second):
        platform.let_go("ana")
        assert first.result(timeout=120) is second.result(timeout=120)
    assert len(platform.requests) == 1


# ---- errors stay with their visitor ---------------------------------------------------------


def test_a_refused_visitor_beside_a_served_one(page, platform):
    platform.quota["ana"] = 3  # seconds left: less than any request
    with platform.visitor("ana"), pytest.warns(UserWarning) as toasts:
        refused = analyze(page, THIRSTY)
    with platform.visitor("bo"):
        served = analyze(page, THIRSTY)
    message = "You have exceeded your free ZeroGPU quota (15s requested vs. 3s left)."
    assert message in str(toasts[0].message)
    ui = page.ui
    assert set(refused) == {ui.note, ui.smaller, ui.status}  # the page stays as it was
    assert message in refused[ui.note]
    assert 'href="https://huggingface.co/login" target="_blank"' in refused[ui.note]
    assert "huggingface.co gives you more GPU time" in refused[ui.note]
    assert shown(served, page).analysis.next_token == " water" and served[ui.note] == ""
    assert stats(page)["refusals"] == {"quota": 1} and stats(page)["gpu_calls"] == 2


def test_the_api_returns_the_platforms_message(page, platform):
    import gradio as gr

    platform.quota["ana"] = 3
    with platform.visitor("ana", api=True), pytest.raises(gr.Error) as info:
        page.api.analyze(THIRSTY, HUB_MODEL)
    assert info.value.message.startswith("You have exceeded your free ZeroGPU quota (15s requested vs. 3s left).")
    assert "Subscribe to Hugging Face PRO" in info.value.message  # spaces' own words to an API caller


def test_the_refusal_offers_the_same_prompt_on_the_smaller_model(page, platform):
    platform.quota["ana"] = 3
    with platform.visitor("ana"), pytest.warns(UserWarning):
        refused = analyze(page, ARTIST)
    offer = refused[page.ui.smaller]
    assert offer["visible"] and "smaller model" in offer["value"] and REGISTRY[BUNDLED].label in offer["value"]
    chosen = page.handlers.on_smaller(HUB_MODEL)  # the visitor clicks it
    assert chosen[page.ui.model]["value"] == BUNDLED
    with platform.visitor("ana"):
        out = analyze(page, ARTIST, model=chosen[page.ui.model]["value"])
    assert shown(out, page).subject.model == BUNDLED and out[page.ui.smaller] == {"__type__": "update",
                                                                                 "visible": False}
    assert len(platform.requests) == 1  # the refused one: the smaller model took no GPU


def test_a_refusal_is_never_handed_to_a_visitor_waiting_on_the_same_prompt(page, platform, parked):
    """ana's call sits in the queue; bo asks for the same prompt and waits on it; no GPU frees
    for ana within the queue's time. bo then tries for himself, and gets his analysis."""
    with bo_waiting_on_ana(page, platform, parked) as (first, second):
        platform.time_out("ana")
        with pytest.raises(GpuRefusedError, match="No GPU was available after 60s") as info:
            first.result(timeout=120)
        mine = second.result(timeout=120)
    assert info.value.kind == "no_gpu" and mine.next_token == " water"
    assert [(r.visitor, r.answer) for r in platform.requests] == [("ana", "timed out"), ("bo", "granted")]
    assert page.engine.cached(THIRSTY, HUB_MODEL) is mine


@pytest.mark.parametrize("setup, kind, words", [
    (lambda p: p.refuse_next("ana", "pending"), "pending_credits", "too many ZeroGPU credits"),
    (lambda p: p.refuse_next("ana", "no_gpu"), "no_gpu", "No GPU was available"),
    (lambda p: setattr(p, "runs_limit", 0), "runs_limit", "exceeded your ZeroGPU runs limit"),
    (lambda p: setattr(p, "max_duration_s", 5), "illegal_duration", "larger than the maximum allowed"),
], ids=["pending-credits", "no-gpu", "runs-limit", "illegal-duration"])
def test_every_refusal_carries_the_platforms_message_and_its_kind(page, platform, setup, kind, words):
    setup(platform)
    with platform.visitor("ana"), pytest.raises(GpuRefusedError, match=words) as info:
        page.engine.analyze(THIRSTY, HUB_MODEL)
    assert info.value.kind == kind and stats(page)["refusals"] == {kind: 1}
    assert page.engine.cached(THIRSTY, HUB_MODEL) is None  # never cached


# ---- the worker ------------------------------------------------------------------------------

POISON = "This prompt makes the device fall over"


def test_a_worker_is_kept_while_calls_succeed(page, platform):
    with platform.visitor("ana"):
        for prompt in (THIRSTY, HUNGRY):
            analyze(page, prompt)
    first, second = platform.requests
    assert platform.pid(first) == platform.pid(second)


def test_a_cuda_fault_is_a_clear_message_and_the_next_call_runs_on_a_fresh_worker(page, platform, monkeypatch):
    forward = attn.compute.forward.forward

    def faulty(loaded, prompt, encoded, **kwargs):
        if prompt == POISON:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return forward(loaded, prompt, encoded, **kwargs)

    monkeypatch.setattr(attn.compute.forward, "forward", faulty)  # before the first fork: the worker has it
    with platform.visitor("ana"):
        with pytest.raises(GpuFaultError) as info:
            page.engine.analyze(POISON, HUB_MODEL)
        after = page.engine.analyze(THIRSTY, HUB_MODEL)
    assert str(info.value).startswith("The model failed on this prompt (the GPU failed: RuntimeError)")
    assert "fresh GPU worker" in str(info.value) and "illegal memory access" not in str(info.value)
    fault, good = platform.requests
    assert fault.failed and not good.failed  # spaces told the platform
    assert platform.pid(good) != platform.pid(fault)  # and forked a fresh worker
    assert after.next_token == " water" and stats(page)["refusals"] == {"gpu_fault": 1}


def test_a_bad_prompt_is_refused_before_any_gpu_call(page, platform):
    with platform.visitor("ana"), pytest.raises(attn.PromptError, match="limit"):
        page.engine.analyze("word " * 5000, HUB_MODEL)
    assert platform.requests == []


@pytest.mark.parametrize("module, name, fault, expected, message", [
    (attn.compute.forward, "forward", IntegrityError("Layer 3: attention rows sum to 1 ± 2.00e-01."), IntegrityError,
     "Layer 3: attention rows"),
    (attn.compute.forward, "forward", MemoryError(), AnalysisFailedError,
     "The model failed on this prompt \\(MemoryError\\)"),
    (attn.compute.generation, "decode", MemoryError(), AnalysisFailedError,
     "failed while generating \\(MemoryError\\)"),
], ids=["integrity", "crash", "crash-generating"])
def test_an_error_of_ours_in_the_worker_arrives_with_its_message_and_keeps_the_worker(
        page, platform, monkeypatch, module, name, fault, expected, message):
    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(module, name, fail)  # before the first fork: the worker has it
    with platform.visitor("ana"), pytest.raises(expected, match=message):
        page.engine.generate(THIRSTY, HUB_MODEL, 2) if name == "decode" else page.engine.analyze(THIRSTY, HUB_MODEL)
    [call] = platform.requests
    assert not call.failed and page.engine.cache_stats().entries == 0  # a value: the worker stays


def test_a_continuation_made_in_a_worker_equals_one_made_in_process(page, platform, bundled_f32):
    with platform.visitor("ana"):
        remote = page.engine.generate(THIRSTY, HUB_MODEL, 4)
    local = engine_with(bundled_f32).generate(THIRSTY, BUNDLED, 4)
    assert len(platform.requests) == 1 and page.engine.generate_calls == 1  # counted here, not in the worker
    assert remote.generated_ids.tolist() == local.generated_ids.tolist()
    for mine, theirs in zip(remote.steps, local.steps, strict=True):  # one CPU thread there
        np.testing.assert_allclose(mine.last_row, theirs.last_row, rtol=0, atol=1e-6)


def test_an_aborted_call_is_a_refusal_and_the_next_call_runs(page, platform, monkeypatch):
    """A call past its time is ended by the platform: spaces says "GPU task aborted"."""
    stuck = multiprocessing.get_context("fork").Event()  # never set: the call runs until aborted
    forward = attn.compute.forward.forward

    def hangs(loaded, prompt, encoded, **kwargs):
        if prompt == POISON:
            stuck.wait()
        return forward(loaded, prompt, encoded, **kwargs)

    monkeypatch.setattr(attn.compute.forward, "forward", hangs)
    platform.abort_after_s = 1.0
    with platform.visitor("ana"):
        with pytest.raises(GpuRefusedError, match="GPU task aborted") as info:
            page.engine.analyze(POISON, HUB_MODEL)
        platform.abort_after_s = None
        assert page.engine.analyze(THIRSTY, HUB_MODEL).next_token == " water"
    assert info.value.kind == "aborted"


def test_a_fresh_fork_for_every_call_works_the_same(page, platform):
    platform.reuse_workers = False
    with platform.visitor("ana"):
        for prompt in (THIRSTY, HUNGRY):
            analyze(page, prompt)
    first, second = platform.requests
    assert platform.pid(first) != platform.pid(second)


# ---- the edges -------------------------------------------------------------------------------


def test_stats_count_gpu_and_cpu_calls_requested_seconds_and_refusals(page, platform):
    platform.quota["bo"] = 3
    with platform.visitor("ana"):
        analyze(page, THIRSTY)
        analyze(page, THIRSTY, model=BUNDLED)
    with platform.visitor("bo"), pytest.warns(UserWarning):
        analyze(page, HUNGRY)
    s = stats(page)
    assert (s["gpu_calls"], s["cpu_calls"], s["refusals"]) == (2, 1, {"quota": 1})
    assert s["gpu_seconds_requested"] == 2 * duration.gpu_seconds(Work("forward", 9))


def test_building_the_page_switches_tokenizers_parallelism_off(platform, bundled_f32, monkeypatch):
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    build_page(bundled_f32, monkeypatch)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
