"""Faults: a model that raises mid-request, a model that fails to load, a cache directory
that is read-only or holds a broken conversion, a first-launch conversion killed half way,
and malformed requests to the running app. Each gives a clear error or a working fallback,
and whatever was serving keeps serving.

The one-minute GGUF conversion is replaced by fakes (a tiny random Gemma 3 and the tiny
BPE tokenizer from conftest); the code around it (cache dirs, manifest, verification,
atomic replace, sweeping) is the real one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

import attn.model.bundled as ckpt
import attn.model.loading as models
from attn import (
    BUNDLED,
    REGISTRY,
    AnalysisFailedError,
    AttnError,
    Engine,
    ModelUnavailableError,
    UnknownModelError,
)
from helpers import SETTINGS, THIRSTY, FakeConversion, engine_with

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

POISON = "This prompt makes the device fall over"


# ---- the model raising mid-request ------------------------------------------------------


class PoisonedModel:
    """A fault in a real model's decoder (where a device fault strikes, however the model is
    called): its forward raises on one token sequence while armed."""

    def __init__(self, decoder, poison_ids: list[int]):
        self.poison_ids = poison_ids
        self.armed = True
        self.calls = 0
        self.handle = decoder.register_forward_pre_hook(self._check, with_kwargs=True)

    def _check(self, module, args, kwargs):
        self.calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self.armed and ids[0].tolist() == self.poison_ids:
            raise RuntimeError("simulated device fault: CUDA error: an illegal memory access")


@pytest.fixture
def poisoned(bundled):
    tok = bundled.tokenizer
    ids = [tok.bos_token_id] + tok(POISON, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    model = PoisonedModel(bundled.model.model, ids)
    engine = engine_with(bundled)
    yield engine, model
    model.handle.remove()


def test_a_model_raising_mid_request_is_a_clear_error_and_the_engine_recovers(poisoned, caplog):
    engine, model = poisoned
    with caplog.at_level(logging.ERROR, logger="attn.compute.engine"):
        with pytest.raises(AnalysisFailedError) as info:
            engine.analyze(POISON, BUNDLED)
    msg = str(info.value)
    assert isinstance(info.value, AttnError)  # the app shows AttnError messages verbatim
    assert msg.startswith("The model failed on this prompt (RuntimeError)"), msg
    assert "nothing was cached" in msg and "Traceback" not in msg
    assert "illegal memory access" not in msg  # internals stay in the log ...
    assert "analysis failed" in caplog.text and "illegal memory access" in caplog.text  # ... which has them
    assert isinstance(info.value.__cause__, RuntimeError)

    # Not cached: the same engine answers the next request, and the failed prompt is
    # computed afresh (not replayed from a cached failure) once the fault is gone.
    assert engine.cached(POISON, BUNDLED) is None
    assert engine.cache_stats().entries == 0
    assert engine.analyze(THIRSTY, BUNDLED).next_token == " water"
    with pytest.raises(AnalysisFailedError):
        engine.analyze(POISON, BUNDLED)  # still failing: tried again, not a cached result
    calls = model.calls
    model.armed = False
    analysis = engine.analyze(POISON, BUNDLED)
    assert model.calls == calls + 1
    assert analysis.prompt == POISON and engine.cached(POISON, BUNDLED) is analysis


def test_concurrent_requests_for_a_failing_prompt_all_fail_cleanly(poisoned):
    engine, model = poisoned
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: _outcome(engine, POISON), range(4)))
    assert outcomes == ["AnalysisFailedError"] * 4
    assert engine.cached(POISON, BUNDLED) is None
    assert _outcome(engine, THIRSTY) == "ok"


def _outcome(engine, prompt) -> str:
    try:
        engine.analyze(prompt, BUNDLED)
        return "ok"
    except Exception as exc:
        return type(exc).__name__


# ---- a model that fails to load -----------------------------------------------------------


class FlakyLoader:
    def __init__(self, good, failures: dict[str, Exception]):
        self.good = good
        self.failures = failures
        self.calls: dict[str, int] = {}

    def __call__(self, name, progress):
        self.calls[name] = self.calls.get(name, 0) + 1
        progress(f"Loading {name}")
        if name in self.failures:
            raise self.failures[name]
        return self.good


def test_a_model_that_fails_to_load_is_reported_remembered_and_isolated(bundled, caplog):
    loader = FlakyLoader(bundled, {"gemma-3-1b": OSError("disk on fire: /models/gemma-3-1b is unreadable")})
    engine = engine_with(loader, list(REGISTRY))  # the real registry: both models
    with caplog.at_level(logging.ERROR, logger="attn.compute.engine"):
        with pytest.raises(ModelUnavailableError) as info:
            engine.analyze("Hello", "gemma-3-1b")
    reason = str(info.value)
    assert reason == "Model 'gemma-3-1b' failed to load: OSError: disk on fire: /models/gemma-3-1b is unreadable"
    assert engine.status("gemma-3-1b") == ("error", reason)
    assert reason in caplog.text

    # Remembered: asking again gives the same reason without another load attempt.
    with pytest.raises(ModelUnavailableError, match="disk on fire"):
        engine.analyze("Hello again", "gemma-3-1b")
    with pytest.raises(ModelUnavailableError, match="disk on fire"):
        engine.model("gemma-3-1b")
    engine.preload("gemma-3-1b").join(10)  # a background retry neither raises nor reloads
    assert loader.calls["gemma-3-1b"] == 1

    # The other model is untouched.
    assert engine.status(BUNDLED)[0] == "not loaded"
    assert engine.analyze(THIRSTY, BUNDLED).next_token == " water"
    assert engine.status(BUNDLED)[0] == "ready"
    assert engine.status("gemma-3-1b") == ("error", reason)


def test_a_load_failure_with_its_own_message_keeps_it(bundled):
    own = ModelUnavailableError("Gemma 3 1B is gated: set the HF_TOKEN secret.")
    engine = engine_with(FlakyLoader(bundled, {"gemma-3-1b": own}), list(REGISTRY))
    with pytest.raises(ModelUnavailableError) as info:
        engine.analyze("Hello", "gemma-3-1b")
    assert str(info.value) == "Gemma 3 1B is gated: set the HF_TOKEN secret."
    assert engine.status("gemma-3-1b") == ("error", "Gemma 3 1B is gated: set the HF_TOKEN secret.")


def test_a_loader_that_dies_in_the_background_leaves_the_status_readable(bundled):
    gate = threading.Event()

    def slow_then_fail(name, progress):
        progress("Dequantizing the weights")
        assert gate.wait(10)
        raise MemoryError("out of memory while loading")

    engine = engine_with(slow_then_fail)
    thread = engine.preload(BUNDLED)
    deadline = time.monotonic() + 10
    while engine.status(BUNDLED)[0] != "loading" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.status(BUNDLED) == ("loading", "Dequantizing the weights")
    gate.set()
    thread.join(10)
    assert not thread.is_alive()
    state, detail = engine.status(BUNDLED)
    assert state == "error" and "MemoryError: out of memory while loading" in detail


# ---- the bundled model's cache directory ---------------------------------------------------


@pytest.fixture
def fake(monkeypatch, tiny, bpe_tokenizer) -> FakeConversion:
    conversion = FakeConversion(tiny, bpe_tokenizer, seed=5)
    monkeypatch.setattr(ckpt, "_convert", conversion)
    return conversion


def test_a_read_only_cache_dir_falls_back_to_memory(tmp_path, monkeypatch, fake):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        if os.access(root, os.W_OK):  # root ignores the mode bits: make the check see what a user would
            monkeypatch.setattr(ckpt, "_writable", lambda path: False)
        directory, in_memory = ckpt.ensure_checkpoint(root)
        assert directory is None and in_memory is not None
        model, tokenizer = in_memory
        assert model.config.num_hidden_layers == 6
        assert tokenizer("The quick fox")["input_ids"] == fake.tokenizer("The quick fox")["input_ids"]
        assert list(root.iterdir()) == []  # nothing written into the read-only dir
        assert not fake.workdirs[0].is_relative_to(root) and not fake.workdirs[0].exists()

        # The whole load works from memory too, and analyses run.
        engine = Engine.for_settings(replace(SETTINGS, cache_dir=root, models=(BUNDLED,), device="cpu"))
        assert engine.analyze("The quick brown fox", BUNDLED).num_layers == 6
        assert engine.status(BUNDLED)[0] == "ready"
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o755)


def _corrupt(directory: Path, how: str) -> str:
    """Break a verified conversion; returns what verify() must say."""
    weights = directory / "model.safetensors"
    if how == "half-written":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return "model.safetensors has the wrong size"
    if how == "flipped-byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x55
        weights.write_bytes(bytes(data))
        return "model.safetensors is corrupt (checksum mismatch)"
    if how == "missing-file":
        (directory / "tokenizer.json").unlink()
        return "tokenizer.json is missing"
    if how == "no-manifest":
        (directory / ckpt.MANIFEST).unlink()
        return "no manifest (conversion never finished)"
    if how == "garbage-manifest":
        (directory / ckpt.MANIFEST).write_bytes(b"\x00\xff{ not json")
        return "unreadable manifest"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["half-written", "flipped-byte", "missing-file", "no-manifest", "garbage-manifest"])
def test_a_broken_conversion_is_never_used_but_rebuilt(tmp_path, fake, how):
    target, _ = ckpt.ensure_checkpoint(tmp_path)
    assert ckpt.verify(target) is None and len(fake.workdirs) == 1
    expected = _corrupt(target, how)
    assert expected in ckpt.verify(target)

    rebuilt, in_memory = ckpt.ensure_checkpoint(tmp_path)
    assert (rebuilt, in_memory) == (target, None)
    assert len(fake.workdirs) == 2  # converted again, not loaded as it was
    assert ckpt.verify(rebuilt) is None
    assert not list(tmp_path.glob(".convert-*"))


def test_a_broken_conversion_is_rebuilt_before_the_model_loads(tmp_path, fake):
    target, _ = ckpt.ensure_checkpoint(tmp_path)
    _corrupt(target, "flipped-byte")
    loaded = models.load(BUNDLED, replace(SETTINGS, cache_dir=tmp_path, device="cpu"))
    assert len(fake.workdirs) == 2
    assert ckpt.verify(target) is None
    assert loaded.num_layers == 6


# ---- a first-launch conversion killed half way --------------------------------------------

KILLED_CONVERSION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import attn.model.bundled as ckpt

    root, stage = Path(sys.argv[1]), sys.argv[2]

    def convert(workdir, progress):
        (Path(workdir) / "model.gguf").write_bytes(b"\\0" * 65536)  # half-assembled GGUF
        if stage == "converting":
            (root / "READY").write_text(str(workdir))
            time.sleep(120)
        for name in ("model.safetensors", "tokenizer.json"):
            Path(workdir, name).write_bytes(b"w" * 65536)

    def slow_manifest(directory, source_sha256):
        (root / "READY").write_text(str(directory))
        time.sleep(120)

    ckpt._convert = convert
    ckpt._write_manifest = slow_manifest
    ckpt.ensure_checkpoint(root)
    print("NOT KILLED")
    """
)


@pytest.mark.parametrize("stage, existing", [("converting", None), ("saving", None), ("converting", "flipped-byte")],
                         ids=["while-converting", "while-saving", "rebuilding-a-corrupt-cache"])
def test_a_conversion_killed_half_way_is_swept_and_redone(tmp_path, fake, stage, existing):
    target = ckpt.checkpoint_dir(tmp_path)
    if existing:
        ckpt.ensure_checkpoint(tmp_path)
        _corrupt(target, existing)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CONVERSION, str(tmp_path), stage], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "READY").exists():
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # What the killed launch left: no usable checkpoint, and its scratch dir.
    assert not target.exists() or ckpt.verify(target) is not None
    leftovers = list(tmp_path.glob(".convert-*"))
    assert [str(p) for p in leftovers] == [(tmp_path / "READY").read_text()]
    assert (leftovers[0] / "model.gguf").exists()
    if stage == "saving":
        assert (leftovers[0] / "model.safetensors").exists() and not (leftovers[0] / ckpt.MANIFEST).exists()

    # The next launch is not blocked by the dead process's lock, sweeps the leftovers and
    # converts again into a verified checkpoint.
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=ckpt.ensure_checkpoint(tmp_path)), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the next launch hung (a lock left by the killed process?)"
    assert result["out"] == (target, None)
    assert ckpt.verify(target) is None
    assert not list(tmp_path.glob(".convert-*"))


# ---- the running app -------------------------------------------------------------------------


def raw_call(app, endpoint: str, body: bytes) -> tuple[int, str]:
    """POST a raw body to /gradio_api/call/<endpoint>; (status, event stream or error body)."""
    req = urllib.request.Request(app.url + f"gradio_api/call/{endpoint}", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            event_id = json.loads(r.read())["event_id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    with urllib.request.urlopen(app.url + f"gradio_api/call/{endpoint}/{event_id}", timeout=60) as r:
        return r.status, r.read().decode("utf-8", "replace")


def assert_serving(app) -> None:
    assert app.alive()
    status, stream = raw_call(app, "view", json.dumps({"data": [THIRSTY, BUNDLED, 12, "mean", "gray", "raw"]}).encode())
    assert status == 200 and "event: complete" in stream and '" water"' in stream, stream[:300]


MALFORMED = {
    "not-json": ("analyze", b"{not json", 422),
    "data-not-a-list": ("analyze", b'{"data": "nope"}', 422),
    "no-data": ("analyze", b"{}", 422),
    "missing-args": ("analyze", b'{"data": []}', 200),
    "nulls": ("analyze", b'{"data": [null, null]}', 200),
    "prompt-a-number": ("analyze", b'{"data": [123, "gemma-3-270m"]}', 200),
    "prompt-an-object": ("analyze", b'{"data": [{"a": 1}, "gemma-3-270m"]}', 200),
    "lone-surrogate": ("analyze", b'{"data": ["\\ud800 then", "gemma-3-270m"]}', 200),
    "view-nulls": ("view", b'{"data": [null, null, null, null, null, null]}', 200),
    "view-nan-layer": ("view", b'{"data": ["Hello", "gemma-3-270m", NaN, "mean", "gray", "raw"]}', 200),
    "view-inf-layer": ("view", b'{"data": ["Hello", "gemma-3-270m", Infinity, "mean", "gray", "raw"]}', 200),
    "view-list-head": ("view", b'{"data": ["Hello", "gemma-3-270m", 1, ["mean"], "gray", "raw"]}', 200),
    "model-a-list": ("analyze", b'{"data": ["Hello", ["gemma-3-270m"]]}', 200),
    "model-an-object": ("view", b'{"data": ["Hello", {"name": "gemma-3-270m"}, 1, "mean", "gray", "raw"]}', 200),
    "too-many-args": ("stats", b'{"data": [1, 2, 3]}', 200),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_request_fails_alone_and_the_server_keeps_serving(app, case):
    endpoint, body, expected_status = MALFORMED[case]
    status, stream = raw_call(app, endpoint, body)
    assert status == expected_status, stream[:300]
    if status == 200 and case != "too-many-args":
        assert "event: error" in stream, stream[:300]
    assert "Traceback" not in stream
    assert_serving(app)


def test_a_burst_of_failing_requests_leaves_the_server_serving(app):
    from gradio_client import Client

    def bad(i: int) -> str:
        client = Client(app.url, verbose=False)
        calls = [
            lambda: client.predict("", BUNDLED, api_name="/analyze"),
            lambda: client.predict("Hello", "../../etc/passwd", api_name="/analyze"),
            lambda: client.predict("Hello", "gemma-3-1b", api_name="/analyze"),  # gated: no token here
            lambda: client.predict(THIRSTY, BUNDLED, 99, "mean", "gray", api_name="/view"),
        ]
        try:
            calls[i % len(calls)]()
        except Exception as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(8) as pool:
        messages = list(pool.map(bad, range(16)))
    assert "no error" not in messages
    assert all(m and "Traceback" not in m for m in messages)
    assert any("Unknown model" in m for m in messages) and any("gated" in m for m in messages)
    assert_serving(app)
    stats = app.stats()
    assert stats["models"][BUNDLED] == "ready" and stats["models"]["gemma-3-1b"] == "error"


def test_a_bad_model_name_through_the_engine_is_unknown_not_a_crash(bundled):
    engine = engine_with(FlakyLoader(bundled, {}))
    for name in ("gemma-3-1b", "nope", None, 42):
        with pytest.raises(UnknownModelError):
            engine.analyze("Hello", name)
    assert engine.analyze(THIRSTY, BUNDLED).next_token == " water"
