"""Load: 16 concurrent gradio_client sessions x 10 requests against the real app (new
prompts through /analyze, layer/head switches through /view), then 200 distinct prompts in
all: no errors, no session ever sees another's results, and the app's memory stays within
what its caches allow.

RSS of the app process (psutil on the server's pid) is measured before the first of the
200 prompts and after the last; the numbers are printed (pytest -rP shows them) and stored
as test properties. Bound: the analysis cache (ATTN_CACHE_BYTES, 256 MiB) + the figure
cache (64 MiB) + a generous allowance for the runtime: growth < 600 MiB.

Then the issue's flake: in about one call in 800, gradio_client 2.7.2 ended a call with a
CancelledError whose message was empty, and the server logged nothing (see
app_server.ApiClient for the race). The 16x10 /analyze load is repeated ATTN_LOAD_ROUNDS
times (default 4: 640 calls) through ApiClient, and the race is also forced on purpose, so
that the workaround is tested every run, not once in 800 calls.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import random
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

import app_server
from helpers import THIRSTY

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.app, pytest.mark.slow]  # minutes of load on the app.py subprocess

MODEL = app_server.BUNDLED
SESSIONS, REQUESTS = 16, 10
DISTINCT_PROMPTS = 200
NUM_LAYERS, NUM_HEADS = 18, 4
HEADS = ["mean", "max"] + [str(h) for h in range(NUM_HEADS)] + [f"Head {h}" for h in range(NUM_HEADS)]
MAX_GROWTH = 600 * 2**20
CALL_TIMEOUT_S = 120
LOAD_ROUNDS = int(os.environ.get("ATTN_LOAD_ROUNDS", "4"))
WORDS = ["river", "lamp", "orange", "violin", "harbour", "maple", "comet", "pebble", "garden", "falcon",
         "candle", "meadow", "anchor", "tundra", "saffron", "glacier"]


def new_client(app) -> app_server.ApiClient:
    return app_server.ApiClient(app.url)


def prompt_for(run: str, session: int, request: int) -> str:
    """Short (about 6 tokens: the forward pass is cheap), unique, and naming its session."""
    return f"{WORDS[session]} {request} {run} the"


def check_analysis(result: dict, prompt: str) -> list[str]:
    problems = []
    if result.get("prompt") != prompt:
        problems.append(f"asked {prompt!r}, got the analysis of {result.get('prompt')!r}")
    spans = result.get("spans", [])
    if "".join(prompt[a:b] for a, b in spans) != prompt:
        problems.append(f"tokens of another prompt: {result.get('tokens')}")
    for layer in result.get("attention", []):
        for row in layer:
            if len(row) != len(spans) or not math.isclose(sum(row), 1.0, abs_tol=1e-4):
                problems.append("an attention row that is not a softmax row over this prompt")
                return problems
    return problems


def run_session(app, run: str, session: int, seen: list[str]) -> dict:
    """One visitor: analyses new prompts and moves the layer/head on its latest one."""
    rng = random.Random(1000 + session)
    client = new_client(app)
    mine: dict[str, dict] = {}
    last = None
    errors, views = [], 0
    for request in range(REQUESTS):
        try:
            if last is None or rng.random() < 0.5:
                prompt = prompt_for(run, session, request)
                result = client.predict(prompt, MODEL, api_name="/analyze")
                errors += check_analysis(result, prompt)
                mine[prompt] = result
                seen.append(prompt)
                last = prompt
            else:
                layer, head = rng.randrange(NUM_LAYERS), rng.choice(HEADS)
                view = client.predict(last, MODEL, layer, head, "gray", api_name="/view")
                own = mine[last]
                if view["tokens"] != own["tokens"] or view["next_token"] != own["next_token"]:
                    errors.append(f"/view of {last!r} answered with tokens {view['tokens']}")
                if view["layer"] != layer or len(view["weights"]) != len(own["tokens"]):
                    errors.append(f"/view layer {layer} answered layer {view['layer']}")
                if head != "max" and not math.isclose(sum(view["weights"]), 1.0, abs_tol=1e-4):
                    errors.append(f"view weights (head {head}) do not sum to 1")  # max over heads need not
                views += 1
        except Exception as exc:  # every failure is a finding: keep going, report all
            errors.append(f"session {session} request {request}: {app_server.describe(exc)}")
    return {"errors": errors, "views": views, "analyses": len(mine)}


def analyse_more(app, run: str, count: int, seen: list[str], workers: int = 4) -> list[str]:
    """Top up to DISTINCT_PROMPTS: more distinct prompts through a few more sessions."""
    errors: list[str] = []
    lock = threading.Lock()

    def work(worker: int):
        client = new_client(app)
        for i in range(worker, count, workers):
            prompt = f"{run} {WORDS[i % len(WORDS)]} {i} for"
            try:
                result = client.predict(prompt, MODEL, api_name="/analyze")
                problems = check_analysis(result, prompt)
            except Exception as exc:
                problems = [f"extra prompt {i}: {app_server.describe(exc)}"]
            with lock:
                errors.extend(problems)
                seen.append(prompt)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work, w) for w in range(workers)]:
            future.result(timeout=CALL_TIMEOUT_S * count)
    return errors


def test_concurrent_sessions_get_only_their_own_results_and_memory_stays_bounded(app, record_property):
    proc = psutil.Process(app.proc.pid)
    run = "".join(random.Random(time.monotonic_ns()).choices("bcdfghjklmnpqrstvwz", k=4))  # new to this server
    before_stats = app.stats()
    rss_before = proc.memory_info().rss
    started = time.monotonic()

    seen: list[str] = []
    with ThreadPoolExecutor(SESSIONS) as pool:
        futures = [pool.submit(run_session, app, run, s, seen) for s in range(SESSIONS)]
        results = [f.result(timeout=CALL_TIMEOUT_S * REQUESTS) for f in futures]
    harness_s = time.monotonic() - started
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], "\n".join(errors[:20])
    assert sum(r["views"] for r in results) > 0 and sum(r["analyses"] for r in results) >= SESSIONS

    errors = analyse_more(app, run, DISTINCT_PROMPTS - len(set(seen)), seen)
    assert errors == [], "\n".join(errors[:20])
    assert len(set(seen)) == len(seen) == DISTINCT_PROMPTS
    rss_after = proc.memory_info().rss
    total_s = time.monotonic() - started

    after_stats = app.stats()
    assert app.alive()
    # Every distinct prompt ran the model exactly once; every view was served from the cache.
    assert after_stats["forward_calls"] - before_stats["forward_calls"] == DISTINCT_PROMPTS
    cache = after_stats["cache"]
    assert 0 < cache["bytes"] <= cache["max_bytes"]
    assert cache["entries"] >= DISTINCT_PROMPTS or cache["bytes"] > cache["max_bytes"] // 2
    growth = rss_after - rss_before
    mib = 2**20
    summary = (f"RSS before {rss_before / mib:.0f} MiB, after {DISTINCT_PROMPTS} prompts {rss_after / mib:.0f} MiB "
               f"(growth {growth / mib:+.0f} MiB, bound {MAX_GROWTH / mib:.0f} MiB); cache {cache['entries']} entries, "
               f"{cache['bytes'] / mib:.1f} of {cache['max_bytes'] / mib:.0f} MiB; "
               f"{SESSIONS}x{REQUESTS} harness {harness_s:.1f} s, all {total_s:.1f} s")
    print(summary)
    record_property("rss_before_mib", round(rss_before / mib, 1))
    record_property("rss_after_mib", round(rss_after / mib, 1))
    record_property("load_summary", summary)
    assert growth < MAX_GROWTH, summary
    # And the server still answers a plain request at once.
    assert new_client(app).predict(seen[0], MODEL, 3, "mean", "gray", api_name="/view")["layer"] == 3


def analyse_as_a_visitor(app, run: str, session: int) -> dict:
    """One visitor of the issue's script: its own client, 10 new prompts through /analyze.

    Whatever escapes ApiClient is kept raw, so the test can check its message."""
    failures, dropped = [], 0
    try:
        client = new_client(app)
    except Exception as exc:
        return {"failures": [(f"session {session} client", exc)], "dropped": 0}
    try:
        for request in range(REQUESTS):
            prompt = prompt_for(run, session, request)
            try:
                result = client.predict(prompt, MODEL, api_name="/analyze")
                problems = check_analysis(result, prompt)
                if problems:
                    failures.append((f"{prompt!r}", AssertionError("; ".join(problems))))
            except Exception as exc:
                failures.append((f"{prompt!r}", exc))
    finally:
        dropped = client.dropped
        client.close()
    return {"failures": failures, "dropped": dropped}


def test_repeated_16x10_analyze_load_has_no_failed_call_and_no_silent_failure(app, record_property):
    """LOAD_ROUNDS rounds of the issue's load: 16 new clients at once, 10 distinct prompts each.

    Every call answers with its own prompt's analysis; a failure, if any, says what failed
    (the issue's was a CancelledError with an empty message); every prompt ran the model
    once, calls gradio_client dropped and ApiClient asked again included."""
    before = app.stats()["forward_calls"]
    failures, dropped, calls = [], 0, 0
    started = time.monotonic()
    for _ in range(LOAD_ROUNDS):
        run = "".join(random.Random(time.monotonic_ns()).choices("bcdfghjklmnpqrstvwz", k=5))
        with ThreadPoolExecutor(SESSIONS) as pool:
            futures = [pool.submit(analyse_as_a_visitor, app, run, s) for s in range(SESSIONS)]
            results = [f.result(timeout=CALL_TIMEOUT_S * REQUESTS) for f in futures]
        calls += SESSIONS * REQUESTS
        failures += [(where, exc) for r in results for where, exc in r["failures"]]
        dropped += sum(r["dropped"] for r in results)
    took = time.monotonic() - started
    summary = (f"{calls} /analyze calls in {LOAD_ROUNDS} rounds of {SESSIONS}x{REQUESTS}, {took:.0f} s: "
               f"{len(failures)} failed, {dropped} dropped by gradio_client and asked again")
    print(summary)
    record_property("repeated_load", summary)
    silent = [f"{where}: {exc!r}" for where, exc in failures if not str(exc).strip()]
    assert silent == [], "failures with an empty message:\n" + "\n".join(silent[:20])
    assert failures == [], summary + "\n" + "\n".join(f"{w}: {app_server.describe(e)}" for w, e in failures[:20])
    assert app.stats()["forward_calls"] - before == calls, "a prompt ran the model more or less than once"


@pytest.fixture
def slow_sse_reader(monkeypatch):
    """Widen gradio_client's race on purpose: its SSE reader thread sleeps just before it
    acts on `close_stream`, as a reader starved of the GIL does, so the caller's next call
    is sent while the closing stream still looks open. Yields how many closes it delayed."""
    import gradio_client.client as gc_client

    delayed = []

    def loads(text, *args, **kwargs):
        message = json.loads(text, *args, **kwargs)
        if isinstance(message, dict) and message.get("msg") == "close_stream":
            delayed.append(1)
            time.sleep(0.3)
        return message

    slow_json = types.ModuleType("json")
    slow_json.__dict__.update(vars(json), loads=loads)
    monkeypatch.setattr(gc_client, "json", slow_json)
    yield delayed


def test_a_call_gradio_client_drops_is_asked_again_and_a_failure_says_why(app, slow_sse_reader):
    """The race forced: plain gradio_client drops calls with an empty message; ApiClient
    asks again and gets the answer without a second forward pass, and when it gives up,
    its message says which call and why."""
    prompt = THIRSTY
    plain = app_server.ApiClient(app.url, attempts=1)
    dropped = []
    try:
        for _ in range(6):
            try:
                plain.client.predict(prompt, MODEL, api_name="/analyze")
            except concurrent.futures.CancelledError as exc:
                dropped.append(exc)
        # The bug this works around (if this fails, gradio_client fixed it: ApiClient's retry can go).
        assert slow_sse_reader, "the close_stream hook never ran: gradio_client's reader changed"
        assert dropped and all(str(exc) == "" for exc in dropped), dropped

        # ApiClient with a single attempt: the dropped call fails, and says what happened.
        with pytest.raises(app_server.CallFailed, match=r"/analyze.*dropped the call") as failed:
            for _ in range(6):
                plain.predict(prompt, MODEL, api_name="/analyze")
        assert str(failed.value).strip()
    finally:
        plain.close()

    before = app.stats()["forward_calls"]
    client = app_server.ApiClient(app.url)
    try:
        for i in range(6):
            assert client.predict(f"{prompt} {i}", MODEL, api_name="/analyze")["prompt"] == f"{prompt} {i}"
        assert client.dropped > 0, "the race was not forced: this test checks nothing"
        # The server ran each dropped call; asking again was served from the cache.
        assert app.stats()["forward_calls"] - before == 6
    finally:
        client.close()
