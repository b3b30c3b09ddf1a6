"""Phase 1, start: app.py as a subprocess timed from process start to a first /analyze answered
(and, with --full, the first-ever launch and the conversion against transformers' GGUF loader).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.children import run_child
from bench.common import BUNDLED, FIRST_LAUNCH_ANSWER_S, START_FIRST_ANSWER_S, Report, fmt_s, log, med, now
from bench.launch import launch
from bench.prompts import ARTIST


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False)


def measure_launch(apps: list, log_dir: Path, cache_dir: str | None = None, ready_timeout: float = 600) -> dict:
    """Start app.py; seconds from Popen to GET / == 200, to model ready, and to the answer
    of a first /analyze sent as soon as the page answered. The app is left running."""
    for attempt in range(3):
        app = launch(log_dir, cache_dir)
        apps.append(app)
        try:
            t_http = app.wait_http(timeout=180, poll=0.05)
            break
        except RuntimeError:
            app.stop()
            if attempt == 2 or "address already in use" not in app.log_tail().lower():
                raise
    first: dict = {}

    def first_analyze():
        try:
            c = client(app.url)
            first["client_s"] = app.since_start()
            res = c.predict(ARTIST, BUNDLED, api_name="/analyze")
            first["analyze_s"] = app.since_start()
            first["next_token"] = res.get("next_token")
        except Exception as exc:  # reported below
            first["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=first_analyze, daemon=True)
    thread.start()
    t_ready = app.wait_model(BUNDLED, ready_timeout, poll=0.1)
    thread.join(timeout=300)
    if "error" in first or "analyze_s" not in first:
        raise RuntimeError(f"first /analyze failed: {first.get('error', 'no answer in 300 s')}")
    return {"http_s": t_http, "ready_s": t_ready, "first_analyze_s": first["analyze_s"],
            "client_connected_s": first.get("client_s"), "next_token": first.get("next_token"),
            "app": app}


def phase_start(rep: Report, ctx: dict, launches: int) -> None:
    from attn.model import bundled
    from attn.settings import Settings

    target = bundled.checkpoint_dir(Settings.from_env().cache_dir)  # the cache app.py will use
    t = now()
    problem = bundled.verify(target) if target.is_dir() else "not converted yet"
    rep.raw["start.cache_dir"] = str(target)
    rep.raw["start.verify_in_bench_s"] = now() - t
    if problem:
        log(f"cache not ready ({problem}): priming launch converts it first")
        res = measure_launch(ctx["apps"], ctx["tmp"])
        res.pop("app").stop()
        rep.raw["start.priming_launch"] = res
        rep.check("1 start", "priming launch (converted the cache; not a second launch)",
                  fmt_s(res["ready_s"]), "to model ready", None)
    runs = []
    for i in range(launches):
        log(f"launch {i + 1}/{launches}")
        res = measure_launch(ctx["apps"], ctx["tmp"])
        app = res.pop("app")
        runs.append(res)
        if i < launches - 1:
            app.stop()
        else:
            ctx["app"] = app
    rep.raw["start.launches"] = runs
    first = med(r["first_analyze_s"] for r in runs)
    rep.check("1 start", f"second launch: process start -> first /analyze answered (artist passage) "
              f"<= {START_FIRST_ANSWER_S:.0f} s", fmt_s(first),
              f"{first / START_FIRST_ANSWER_S:.2f}x the budget (median of {len(runs)} launches: "
              f"{', '.join(fmt_s(r['first_analyze_s']) for r in runs)}; sent as soon as GET / answered)",
              first <= START_FIRST_ANSWER_S)
    rep.check("1 start", "second launch: page answers (GET / 200)", fmt_s(med(r["http_s"] for r in runs)),
              f"launches: {', '.join(fmt_s(r['http_s']) for r in runs)}", None)
    rep.check("1 start", "second launch: model ready (/stats)", fmt_s(med(r["ready_s"] for r in runs)),
              "from process start", None)
    import_floor(rep, launches)


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
    log("--full: first-ever launch on a fresh ATTN_CACHE_DIR")
    fresh = tempfile.mkdtemp(prefix="attn-bench-cache-")
    try:
        res = measure_launch(ctx["apps"], ctx["tmp"], cache_dir=fresh, ready_timeout=1800)
        res.pop("app").stop()
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    rep.raw["full.first_launch"] = res
    rep.check("1 start (--full)", f"first-ever launch (empty cache, converts): process start -> first /analyze "
              f"answered <= {FIRST_LAUNCH_ANSWER_S:.0f} s", fmt_s(res["first_analyze_s"]),
              f"{res['first_analyze_s'] / FIRST_LAUNCH_ANSWER_S:.2f}x the budget; GET / at {fmt_s(res['http_s'])}, "
              f"model ready at {fmt_s(res['ready_s'])}", res["first_analyze_s"] <= FIRST_LAUNCH_ANSWER_S)
