"""The GPU path the way ZeroGPU runs it: a forked worker, arguments and results pickled.

On ZeroGPU, `spaces.GPU` runs the decorated function in a forked process that it keeps for
later calls; arguments and the return value cross as pickles, nothing the function changes
comes back, and an exception other than gr.Error arrives as a bare "ZeroGPU worker error"
naming only its class (spaces 0.51.3, zero/wrappers.py). `ForkedWorker` does the same here,
so a value that does not pickle, a mutation that would be lost, or a message that would be
swallowed fails in this test rather than on the Space.
"""

from __future__ import annotations

import multiprocessing
import pickle
from dataclasses import replace

import numpy as np
import pytest

import attn.compute.ablation
import attn.compute.forward
from attn.errors import AnalysisFailedError, IntegrityError
from attn.model.registry import BUNDLED
from helpers import HUNGRY, SETTINGS, THIRSTY, engine_with

CALL_TIMEOUT_S = 120


class ForkedWorker:
    """A stand-in for `spaces.GPU(duration=...)` on ZeroGPU, minus the GPU."""

    def __init__(self):
        self.calls = 0
        self.worker_pids: set[int] = set()
        self._workers: list = []

    def __call__(self, task):
        ctx = multiprocessing.get_context("fork")
        pipe: dict = {}

        def handler(*args, **kwargs):
            if "conn" not in pipe:
                parent, child = ctx.Pipe()
                process = ctx.Process(target=_serve, args=(task, child), daemon=True)
                process.start()
                child.close()
                pipe.update(conn=parent, process=process)
                self._workers.append((process, parent))
            self.calls += 1
            pipe["conn"].send_bytes(pickle.dumps((args, kwargs)))
            if not pipe["conn"].poll(CALL_TIMEOUT_S):
                raise TimeoutError("the forked worker did not answer")
            ok, value, pid = pickle.loads(pipe["conn"].recv_bytes())
            self.worker_pids.add(pid)
            if not ok:
                raise RuntimeError(f"ZeroGPU worker error: {value}")
            return value

        return handler

    def close(self) -> None:
        """Stop the workers: a fork holds copies of this process's pipes (Playwright's driver
        waits for its pipe to close before it exits), so none may outlive its test."""
        for process, conn in self._workers:
            conn.close()
            process.terminate()
            process.join(10)
        self._workers.clear()


def _serve(task, conn) -> None:
    import os

    import torch

    # OpenMP hangs in a child forked after the parent used it; ZeroGPU's worker computes
    # on CUDA, so this stand-in computes on one CPU thread.
    torch.set_num_threads(1)
    while True:
        args, kwargs = pickle.loads(conn.recv_bytes())
        try:
            reply = (True, task(*args, **kwargs), os.getpid())
            payload = pickle.dumps(reply)
        except Exception as exc:  # what spaces keeps of it: the class name
            payload = pickle.dumps((False, type(exc).__name__, os.getpid()))
        conn.send_bytes(payload)


@pytest.fixture
def forked_engine(bundled_f32):
    gpu = ForkedWorker()
    yield engine_with(bundled_f32, accelerator=gpu), gpu
    gpu.close()


def test_an_analysis_made_in_a_forked_worker_equals_one_made_in_process(forked_engine, thirsty_analysis):
    engine, gpu = forked_engine
    remote = engine.analyze(THIRSTY, BUNDLED)
    local = thirsty_analysis  # attn.compute.forward.analyze(bundled_f32, THIRSTY), made once in conftest
    assert gpu.calls == 1 and gpu.worker_pids and multiprocessing.current_process().pid not in gpu.worker_pids
    assert remote.next_token == local.next_token == " water"
    # One CPU thread there, and here as many as conftest leaves (one, unless OMP_NUM_THREADS
    # says otherwise): the same numbers up to summation order.
    np.testing.assert_allclose(remote.last_row, local.last_row, rtol=0, atol=1e-6)
    np.testing.assert_allclose(remote.full, local.full, rtol=0, atol=1e-3)  # float16


def test_forward_passes_are_counted_in_the_main_process(forked_engine):
    engine, gpu = forked_engine
    for prompt in (THIRSTY, HUNGRY, THIRSTY):
        engine.analyze(prompt, BUNDLED)
    assert engine.forward_calls == gpu.calls == 2
    assert engine.cache_stats().entries == 2


@pytest.mark.slow  # the analysis and nine deletions in the worker, then again in process: 3 s of CPU
def test_an_ablation_runs_its_batches_in_the_worker(forked_engine, bundled_f32):
    engine, gpu = forked_engine
    remote = engine.ablate(THIRSTY, BUNDLED)
    local = attn.compute.ablation.ablate(bundled_f32, attn.compute.forward.analyze(bundled_f32, THIRSTY))
    assert gpu.calls == 2  # the analysis, then one batch of 9 deletions
    assert [d.index for d in remote.deletions] == [d.index for d in local.deletions]
    np.testing.assert_allclose([d.p_next for d in remote.deletions], [d.p_next for d in local.deletions],
                               rtol=0, atol=1e-6)


def test_a_prompt_error_costs_no_gpu_call(forked_engine):
    engine, gpu = forked_engine
    with pytest.raises(attn.PromptError, match="limit"):
        engine.analyze("word " * 5000, BUNDLED)
    assert gpu.calls == 0


@pytest.mark.parametrize("fault, expected, message", [
    (IntegrityError("Layer 3: attention rows sum to 1 ± 2.00e-01 (tolerance 0.0001)."), IntegrityError, "Layer 3"),
    (MemoryError(), AnalysisFailedError, "The model failed on this prompt \\(MemoryError\\)"),
], ids=["integrity", "crash"])
def test_a_failure_in_the_worker_arrives_with_its_message(forked_engine, monkeypatch, fault, expected, message):
    engine, gpu = forked_engine

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(attn.compute.forward, "forward", fail)  # inherited by the fork
    with pytest.raises(expected, match=message):
        engine.analyze(THIRSTY, BUNDLED)
    assert gpu.calls == 1 and len(engine.cache) == 0


@pytest.mark.slow  # builds the page (Gradio) and forks a worker
def test_the_app_sends_every_analysis_through_the_gpu_decorator_and_counts_it(monkeypatch):
    """create_app hands spaces.GPU to its engine; /stats counts what the worker ran."""
    import spaces

    import app

    gpu = ForkedWorker()
    monkeypatch.setattr(spaces, "GPU", lambda **kwargs: gpu)
    demo = app.create_app(replace(SETTINGS, device="cpu", prefetch=False))
    try:
        first = demo(THIRSTY, BUNDLED, api_name="analyze")
        again = demo(THIRSTY, BUNDLED, api_name="analyze")
        assert first == again and first["next_token"] == " water"
        assert demo(api_name="stats")["forward_calls"] == gpu.calls == 1
    finally:
        gpu.close()
