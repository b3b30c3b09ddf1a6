"""Phase 1, start: app.py as a subprocess timed from process start to the page answering and to
/analyze answered for a preset and for a prompt typed before the restart (and, with --full, the
first-ever launch and the conversion against transformers' GGUF loader).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.children import run_child
from bench.common import (
    BUNDLED,
    FIRST_LAUNCH_ANSWER_S,
    PRESET_AFTER_PAGE_S,
    START_FIRST_ANSWER_S,
    TYPED_AFTER_PAGE_S,
    Report,
    fmt_s,
    log,
    med,
    now,
)
from bench.launch import launch
from bench.prompts import ARTIST


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False)


def measure_launch(apps: list, log_dir: Path, cache_dir: str | None = None, ready_timeout: float = 600,
                   prompts: tuple[str, ...] = (ARTIST,), store: Path | None = None, code: str | None = None) -> dict:
    """Start app.py (its analysis store in `store`, default log_dir/store; `code`: a variant,
    see launch); seconds from Popen to GET / == 200, to model ready, and to the answer of each
    of `prompts`' /analyze, all sent at once (one client each) as soon as the page answered.
    The app is left running."""
    env = {"ATTN_STORE_DIR": str(store or log_dir / "store")}
    for attempt in range(3):
        app = launch(log_dir, cache_dir, env, code)
        apps.append(app)
        try:
            t_http = app.wait_http(timeout=180, poll=0.05)
            break
        except RuntimeError:
            app.stop()
            if attempt == 2 or "address already in use" not in app.log_tail().lower():
                raise
    answers: dict = {}

    def analyze(prompt: str):
        try:
            res = client(app.url).predict(prompt, BUNDLED, api_name="/analyze")
            answers[prompt] = app.since_start()
            assert res["prompt"] == prompt, res.get("prompt")
        except Exception as exc:  # reported below
            answers[prompt] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=analyze, args=(p,), daemon=True) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    answered = app.stats()  # before the model is ready, when the answers came from the store
    t_ready = app.wait_model(BUNDLED, ready_timeout, poll=0.1)
    failed = {p: a for p, a in answers.items() if not isinstance(a, float)}
    if failed or len(answers) < len(prompts):
        raise RuntimeError(f"/analyze failed: {failed or 'no answer in 300 s'}")
    return {"http_s": t_http, "ready_s": t_ready, "answers_s": [answers[p] for p in prompts],
            "first_analyze_s": min(answers.values()), "stats_when_answered": answered, "app": app}


def typed_prompt() -> str:
    """A prompt no earlier run typed: the one the priming launch analyses (and stores)."""
    word = "".join(random.Random(time.time_ns()).choices("bcdfghjklmnprstvz", k=6))
    return f"In the {word} workshop the students measured how far the"


def phase_start(rep: Report, ctx: dict, launches: int) -> None:
    """A priming launch types a new prompt (and converts the cache when it must); then
    `launches` second launches ask at once, as soon as the page answers, for a preset and for
    that prompt, both answered from the store (this run's own, ctx["tmp"]/store)."""
    from attn.model import bundled
    from attn.settings import Settings

    target = bundled.checkpoint_dir(Settings.from_env().cache_dir)  # the cache app.py will use
    t = now()
    problem = bundled.verify(target) if target.is_dir() else "not converted yet"
    rep.raw["start.cache_dir"] = str(target)
    rep.raw["start.verify_in_bench_s"] = now() - t
    typed, store = typed_prompt(), ctx["tmp"] / "store"
    log(f"priming launch: types {typed!r}" + (f"; the cache is not ready ({problem}): it converts first"
                                                if problem else ""))
    res = measure_launch(ctx["apps"], ctx["tmp"], prompts=(typed,), store=store)
    res.pop("app").stop()
    rep.raw["start.priming_launch"] = res
    if problem:
        rep.check("1 start", "priming launch (converted the cache; not a second launch)",
                  fmt_s(res["ready_s"]), "to model ready", None)
    runs = []
    for i in range(launches):
        log(f"launch {i + 1}/{launches}")
        res = measure_launch(ctx["apps"], ctx["tmp"], prompts=(ARTIST, typed), store=store)
        app = res.pop("app")
        runs.append(res)
        if i < launches - 1:
            app.stop()
        else:
            ctx["app"] = app
    rep.raw["start.launches"] = runs
    each = ", ".join
    http = [r["http_s"] for r in runs]
    preset = [r["answers_s"][0] - r["http_s"] for r in runs]
    again = [r["answers_s"][1] - r["http_s"] for r in runs]
    stored = all(r["stats_when_answered"]["forward_calls"] == 0 and r["stats_when_answered"]["store"]["hits"] >= 2
                 for r in runs)
    how = (f"median of {len(runs)} launches; both sent at once, one client each, as soon as GET / answered; "
           + ("no forward pass: both from the store" if stored else "NOT all from the store"))
    rep.check("1 start", "second launch: page answers (GET / 200)", fmt_s(med(http)),
              f"launches: {each(fmt_s(x) for x in http)}", None)
    rep.check("1 start", f"second launch: a preset's /analyze (artist passage) <= {PRESET_AFTER_PAGE_S:.1f} s "
              "after the page answers", fmt_s(med(preset)), f"{each(fmt_s(x) for x in preset)} ({how})",
              med(preset) <= PRESET_AFTER_PAGE_S and stored)
    rep.check("1 start", f"second launch: a prompt typed before the restart, /analyze <= {TYPED_AFTER_PAGE_S:.1f} s "
              "after the page answers", fmt_s(med(again)), f"{each(fmt_s(x) for x in again)} ({how})",
              med(again) <= TYPED_AFTER_PAGE_S and stored)
    first = med(r["answers_s"][0] for r in runs)
    rep.check("1 start", "second launch: process start -> a preset's /analyze answered "
              f"<= {START_FIRST_ANSWER_S:.0f} s", fmt_s(first), f"{first / START_FIRST_ANSWER_S:.2f}x the budget "
              f"({each(fmt_s(r['answers_s'][0]) for r in runs)})", first <= START_FIRST_ANSWER_S)
    rep.check("1 start", "second launch: model ready (/stats), loaded in the background", fmt_s(med(r["ready_s"]
              for r in runs)), "from process start", None)
    serve_then_load(rep, ctx, launches, typed, store)
    import_floor(rep, launches)


# app.py with its background load started at once, as before issue 21 (LOAD_AFTER_S = 0).
LOAD_AT_ONCE = "import app; app.LOAD_AFTER_S = 0; app.main()"


def serve_then_load(rep: Report, ctx: dict, reps: int, typed: str, store: Path) -> None:
    """Why the load waits: a stored answer with the model's background load started at once
    against 2 s after the server answers (app.py as it is), launches interleaved."""
    times: dict[str, list[float]] = {"at once": [], "after 2 s": []}
    for i in range(reps):
        for name, code in (("at once", LOAD_AT_ONCE), ("after 2 s", None))[:: 1 if i % 2 == 0 else -1]:
            res = measure_launch(ctx["apps"], ctx["tmp"], prompts=(ARTIST, typed), store=store, code=code)
            res.pop("app").stop()
            times[name].append(max(res["answers_s"]) - res["http_s"])
    rep.raw["start.serve_then_load"] = times
    at_once, later = med(times["at once"]), med(times["after 2 s"])
    rep.check("1 start", "serve, then load: both stored answers after the page, the model's background load "
              "started at once vs 2 s after the server answers (app.py)", f"{fmt_s(at_once)} vs {fmt_s(later)}",
              f"{at_once / later:.2f}x slower at once (median of {reps} interleaved launches each: "
              f"{', '.join(fmt_s(x) for x in times['at once'])} vs {', '.join(fmt_s(x) for x in times['after 2 s'])})",
              None)


# What app.py cannot start without, each imported alone in a fresh interpreter: the floor
# under "process start -> first answer" that no change to this project's code can lower.
FLOOR_IMPORTS = {
    "gradio": "import gradio",
    "torch": "import torch",
    "transformers (Gemma 3 classes, torch included)": "from transformers import Gemma3ForCausalLM",
}


def import_floor(rep: Report, reps: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in FLOOR_IMPORTS}
    for _ in range(reps):
        for name, code in FLOOR_IMPORTS.items():
            t = now()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times[name].append(now() - t)
    rep.raw["start.import_floor_s"] = times
    rep.check("1 start", "floor: each import alone in a fresh interpreter (median of "
              f"{reps}; app.py needs all three)", fmt_s(med(times["gradio"])),
              "; ".join(f"{name} {fmt_s(med(xs))}" for name, xs in times.items()), None)


def phase_full(rep: Report, ctx: dict) -> None:
    """--full: the conversion against transformers' GGUF loader, and the first-ever launch."""
    log("--full: conversion vs transformers' GGUF loader in a subprocess (about a minute)")
    g = run_child(["--child-gguf"], timeout=1800, tmp=ctx["tmp"])
    rep.raw["full.gguf"] = g
    rep.check("1 start (--full)", "one-time conversion: attn/convert.py vs transformers' GGUF loader (same process)",
              fmt_s(g["convert_s"]), f"{g['gguf_load_s'] / g['convert_s']:.1f}x faster than {fmt_s(g['gguf_load_s'])} "
              "(the conversion also assembles the GGUF and writes the checkpoint)", None)
    log("--full: first-ever launch on a fresh ATTN_CACHE_DIR and an empty store")
    fresh = tempfile.mkdtemp(prefix="attn-bench-cache-")
    try:
        res = measure_launch(ctx["apps"], ctx["tmp"], cache_dir=fresh, ready_timeout=1800,
                             prompts=(ARTIST, typed_prompt()), store=Path(fresh) / "analyses")
        res.pop("app").stop()
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    rep.raw["full.first_launch"] = res
    preset, new = res["answers_s"]
    rep.check("1 start (--full)", f"first-ever launch (empty cache and store, converts): process start -> a new "
              f"prompt's /analyze answered <= {FIRST_LAUNCH_ANSWER_S:.0f} s", fmt_s(new),
              f"{new / FIRST_LAUNCH_ANSWER_S:.2f}x the budget; GET / at {fmt_s(res['http_s'])}, a preset (from the "
              f"shipped records) at {fmt_s(preset)}, model ready at {fmt_s(res['ready_s'])}",
              new <= FIRST_LAUNCH_ANSWER_S)
