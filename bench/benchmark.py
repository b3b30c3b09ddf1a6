"""Performance targets of the attention explorer, measured side by side on this machine.

    python bench/benchmark.py [--quick] [--full] [--out FILE.md] [--json FILE.json]

Everything runs on the bundled Gemma 3 270M on the CPU. The machine may be shared and
noisy, so every target is a ratio against a reference measured in the same run,
interleaved with it where possible, and each figure is a median over repeats.

1. Start: `python app.py` as a subprocess (free port, no HF_TOKEN), on a converted
   cache, three launches: seconds from process start until a first /analyze of the
   artist passage (sent as soon as the page answers) comes back (target <= 5 s, the
   median), until GET / answers 200, and until /stats says the model is ready.
   --full adds the first-ever launch on a fresh ATTN_CACHE_DIR (target: first /analyze
   answered <= 30 s) and the naive GGUF load vs the cached load.
2. Analysis: /analyze through gradio_client (a new prompt each repeat, one word varied
   at the same token count, so no cache answers) and, in this process, app.get_analysis
   + app.render_view, each against a bare `model(input_ids, output_attentions=True)` on
   the same token ids, run back to back in rotating order (target <= 1.5x; the verdict
   is the median of the per-repeat ratios).
3. Switching layer / head / BOS mode: app.render_view on a cached analysis at 37 and
   ~1000 tokens: first view, layer switch cold (no wait), layer switch once prefetched,
   head switch, BOS switch (target <= 5% of the in-process analysis of the same prompt,
   timed in the same repeat, and < 100 ms). Between steps the benchmark waits for the
   prefetch to finish, so each step is measured on a quiet process except the
   deliberately cold layer switch. A switch after a 3 s idle is reported beside a
   control (the view on screen asked for again after the same idle): on this VM the
   first request after an idle second costs milliseconds whatever it does.
4. Long prompts: analysis vs bare forward at 2048 tokens (target <= 3x), peak RSS of a
   fresh subprocess per size (VmHWM: a child's ru_maxrss starts at its parent's peak on
   Linux, so it is recorded but not used), Analysis.nbytes at 37 / 512 / 2048 tokens,
   and the views at 2048 tokens (on the child's analysis, pickled back).
5. Concurrency: 8 gradio_client clients (threads) on different prompts at once vs one
   client doing the same number of requests in a row (target: all answered, throughput
   >= sequential).

The model is loaded once here through the app's own engine (whose loader is
attn.models.load), so the bare forward pass and the in-process analysis use the very
same weights. The bare pass runs under torch.inference_mode(), like the analysis.

ATTN_CACHE_DIR is honoured (children inherit it); unset, the app's default is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import replace
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT,):  # the engine and the app launcher (app_server/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from app_server import launch  # noqa: E402

BUNDLED = "gemma-3-270m"
EXAMPLES = json.loads((ROOT / "examples.json").read_text(encoding="utf-8"))
ARTIST = next(e["prompt"] for e in EXAMPLES if e["name"] == "Artist passage")
PRESET_LAYER = next(e["layer"][BUNDLED] for e in EXAMPLES if e["name"] == "Artist passage")
MEAN, MAX = "Mean over heads", "Max over heads"
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
APP_ENV_DROP = SECRET_ENV + ("ATTN_MODELS", "ATTN_DEFAULT_MODEL", "SPACES_ZERO_GPU", "GRADIO_ROOT_PATH")

# Targets.
START_FIRST_ANSWER_S = 5.0
FIRST_LAUNCH_ANSWER_S = 30.0
ANALYSIS_RATIO = 1.5
SWITCH_SHARE = 0.05
SWITCH_MS = 100.0
LONG_RATIO = 3.0

# One word varied at a time keeps the token count (checked) and defeats every cache.
COLOURS = ["red", "green", "yellow", "purple", "orange", "pink", "gray", "brown", "white", "black",
           "gold", "silver", "violet", "teal", "crimson", "amber", "ivory", "navy", "olive", "blue"]
NOUNS = ["waves", "clouds", "trees", "hills", "birds", "boats", "rocks", "stars", "flowers", "fields",
         "mountains", "rivers", "horses", "houses", "ships", "leaves", "roses", "cliffs", "lakes", "sky"]
ADJECTIVES = ["steady", "calm", "firm", "careful", "gentle", "quick", "patient", "light"]


# ---- small utilities ---------------------------------------------------------------------
def now() -> float:
    return time.perf_counter()


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_s(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1000:.1f} ms"


def fmt_mb(b) -> str:
    return "n/a" if b is None else (f"{b / 2**20:,.1f} MiB" if b >= 2**20 else f"{b / 1024:,.1f} KiB")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


LOADAVG: dict[str, float] = {}


def phase_mark(name: str) -> None:
    """Log a phase and note the 1-minute load average (how noisy the machine was)."""
    LOADAVG[name] = round(os.getloadavg()[0], 2)
    log(f"{name} (load average {LOADAVG[name]})")


def maxrss_bytes() -> int:
    """ru_maxrss in bytes. Beware: on Linux a child's ru_maxrss starts at its parent's
    high-water mark (it survives fork and exec), so it is useless for a small child of a
    big parent; peak_rss() is the per-process figure."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def peak_rss() -> int:
    """This process's own peak resident set (VmHWM: reset by exec), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes()


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def quiet_env(env: dict) -> dict:
    env = dict(env)
    for name in SECRET_ENV:
        env.pop(name, None)
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return env


class Report:
    """Result rows for the table, plus every raw sample."""

    def __init__(self):
        self.rows: list[dict] = []
        self.raw: dict[str, object] = {}
        self.errors: list[str] = []

    def row(self, section, target, measured, verdict, status):
        self.rows.append(dict(section=section, target=target, measured=measured, verdict=verdict, status=status))

    def check(self, section, target, measured, verdict, ok: bool | None):
        self.row(section, target, measured, verdict, "INFO" if ok is None else ("PASS" if ok else "FAIL"))

    def error(self, section, exc: BaseException):
        self.errors.append(f"{section}: {''.join(traceback.format_exception(exc))}")
        self.row(section, "(phase failed)", f"{type(exc).__name__}: {str(exc)[:200]}", "see errors", "ERROR")


# ---- prompts -----------------------------------------------------------------------------
def n_tokens(tokenizer, prompt: str) -> int:
    from attn import inference

    return len(inference.encode(tokenizer, prompt, max_tokens=10**7)[0])


def sized_prompt(tokenizer, target: int) -> str:
    """The artist passage repeated, cut at a word so that [BOS] + prompt is at most
    `target` tokens (as close as the word boundaries allow)."""
    words = ARTIST.split(" ")
    text = lambda k: " ".join(islice(cycle(words), k))  # noqa: E731
    lo, hi = 1, target  # each word is at least one token
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_tokens(tokenizer, text(mid)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


def artist_variants(tokenizer):
    """Distinct prompts with the artist passage's token count (up to three words varied)."""
    base = n_tokens(tokenizer, ARTIST)
    seen = {ARTIST}
    for adverb in ADJECTIVES:
        for noun in NOUNS:
            for colour in COLOURS:
                p = (ARTIST.replace(" blue ", f" {colour} ").replace(" waves ", f" {noun} ")
                     .replace(" steady ", f" {adverb} "))
                if p not in seen and n_tokens(tokenizer, p) == base:
                    seen.add(p)
                    yield p


# ---- the app as a subprocess -------------------------------------------------------------
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


# ---- child processes (peak RSS per size, the naive GGUF load) ----------------------------
def child_main(args) -> None:
    """Runs in a fresh process: load, analyse one prompt of `size` tokens, bare forward."""
    import torch

    from attn import inference, models

    out: dict = {"size": args.child_size}
    t = now()
    loaded = models.load(BUNDLED, lambda msg: None)
    out["load_s"] = now() - t
    out["rss_after_load"] = peak_rss()
    tok = loaded.tokenizer
    prompt = ARTIST if args.child_size == n_tokens(tok, ARTIST) else sized_prompt(tok, args.child_size)
    ids = inference.encode(tok, prompt, max_tokens=10**7)[0]
    out["tokens"] = len(ids)
    max_tokens = max(4096, len(ids))

    # Warm-up on the short passage (one-time kernel set-up); negligible memory.
    with torch.inference_mode():
        loaded.model(torch.tensor([inference.encode(tok, ARTIST)[0]]), output_attentions=True)
    out["rss_after_warmup"] = peak_rss()
    out["analyze_s"], out["bare_s"] = [], []
    analysis = None
    for r in range(args.child_reps):
        t0 = now()
        analysis = inference.analyze(loaded, prompt, max_tokens=max_tokens)
        out["analyze_s"].append(now() - t0)
        if r == 0:
            out["rss_after_analyze"] = peak_rss()  # peak of load + one analysis
            out["rss_now_after_analyze"] = current_rss()
        out["bare_s"].append(bare_forward(loaded, ids))
        if r == 0:
            out["rss_after_bare"] = peak_rss()
    out["ru_maxrss_inherited"] = maxrss_bytes()
    out["nbytes"] = analysis.nbytes
    out["full_matrices"] = analysis.full is not None
    out["prompt"] = prompt
    if args.child_pickle:
        with open(args.child_pickle, "wb") as f:
            pickle.dump(analysis, f)
    Path(args.child_out).write_text(json.dumps(out))


def gguf_child_main(args) -> None:
    from attn import bundled

    with tempfile.TemporaryDirectory() as tmp:
        t = now()
        bundled._load_from_gguf(Path(tmp), lambda msg: None)
        dt = now() - t
    Path(args.child_out).write_text(json.dumps({"gguf_load_s": dt, "peak_rss": peak_rss()}))


def run_child(extra: list[str], timeout: float, tmp: Path) -> dict:
    out = tmp / f"child-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra, "--child-out", str(out)]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=quiet_env(os.environ), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"child {extra} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return json.loads(out.read_text())


# ---- in-process helpers (app imported here) ------------------------------------------------
def bare_forward(loaded, ids) -> float:
    import torch

    x = torch.tensor([ids], device=loaded.device)
    t = now()
    with torch.inference_mode():
        out = loaded.model(x, output_attentions=True)
    dt = now() - t
    del out
    return dt


def view_keys(app_mod, analysis, layer: int, head: str, bos: str, every_likely: bool = False) -> list:
    """Keys of this view at every layer; with `every_likely`, of every view the
    prefetcher draws after this one (attn.render.likely_next)."""
    from attn.render import likely_next
    from attn.weights import View, check_view, parse_head

    view = check_view(analysis, View(layer=layer, head=parse_head(head), bos=bos, show_all=False))
    views = [view, *likely_next(analysis, view)] if every_likely else [
        replace(view, layer=i) for i in range(analysis.num_layers)]
    return [app_mod.FIGURES._key(analysis, v) for v in views]


def prefetched(app_mod, analysis, layer, head, bos) -> int:
    cache = app_mod.FIGURES.cache
    return sum(k in cache for k in view_keys(app_mod, analysis, layer, head, bos))


def settle(app_mod, analysis, layer, head, bos, timeout: float = 60) -> bool:
    """Wait until the background prefetch drew every view it draws after this one (so it
    stops competing for the CPU with the next measurement)."""
    if not app_mod.FIGURES.prefetch_enabled:
        return True
    keys = view_keys(app_mod, analysis, layer, head, bos, every_likely=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cache = app_mod.FIGURES.cache
        if all(k in cache for k in keys):
            time.sleep(0.02)
            return True
        time.sleep(0.02)
    return False


def reset_figures(app_mod) -> None:
    from attn.cache import ByteLRU

    figs = app_mod.FIGURES
    figs.cache = ByteLRU(figs.cache.max_bytes, size_of=len)


def timed_render(app_mod, analysis, layer, head, bos) -> float:
    key = {"model": analysis.model, "prompt": analysis.prompt}
    t = now()
    out = app_mod.render_view(key, layer, head, bos, False)
    dt = now() - t
    assert isinstance(out, tuple) and len(out) == 5 and "<img" in out[0], "render_view gave no figure"
    return dt


def view_switches(app_mod, analysis, reps: int, dwell: float = 3.0, analyze=None) -> dict:
    """render_view timings on an analysis in the engine's cache. With `analyze`, each
    repeat first times a fresh analysis of the same prompt (side by side with its views)
    and caches it in the engine, as the app would."""
    s: dict[str, list] = {k: [] for k in ("analysis_s", "first_view", "layer_cold", "layer_warm", "layer_prefetched",
                                          "idle_control", "head_switch", "bos_switch", "bos_back_cached",
                                          "prefetched_at_dwell", "mode_cold")}
    for rep in range(reps):
        if rep:
            settle(app_mod, analysis, l2, "Head 1", "hide")  # the last view drawn below
        if analyze is not None:
            t = now()
            analysis = analyze()
            s["analysis_s"].append(now() - t)
            app_mod.ENGINE.cache.put((analysis.model, analysis.prompt), analysis)
        l0 = min(PRESET_LAYER, analysis.num_layers - 3)
        l1, l2 = l0 + 1, l0 + 2
        reset_figures(app_mod)
        t_start = now()
        s["first_view"].append(timed_render(app_mod, analysis, l0, MEAN, "gray"))
        s["layer_cold"].append(timed_render(app_mod, analysis, l1, MEAN, "gray"))  # no wait
        time.sleep(max(0.0, dwell - (now() - t_start)))
        s["prefetched_at_dwell"].append(prefetched(app_mod, analysis, l1, MEAN, "gray"))
        s["layer_warm"].append(timed_render(app_mod, analysis, l2, MEAN, "gray"))
        settle(app_mod, analysis, l2, MEAN, "gray")
        # Control: the view on screen again (a cache hit, no drawing) after the same idle.
        # This VM makes the first request after an idle second cost ~3-13 ms, whatever it does.
        time.sleep(dwell)
        s["idle_control"].append(timed_render(app_mod, analysis, l2, MEAN, "gray"))
        settle(app_mod, analysis, l2, MEAN, "gray")
        s["layer_prefetched"].append(timed_render(app_mod, analysis, l0, MEAN, "gray"))  # awake: right after
        settle(app_mod, analysis, l0, MEAN, "gray")
        timed_render(app_mod, analysis, l2, MEAN, "gray")
        settle(app_mod, analysis, l2, MEAN, "gray")
        s["head_switch"].append(timed_render(app_mod, analysis, l2, MAX, "gray"))
        settle(app_mod, analysis, l2, MAX, "gray")
        s["bos_switch"].append(timed_render(app_mod, analysis, l2, MAX, "hide"))
        settle(app_mod, analysis, l2, MAX, "hide")
        s["bos_back_cached"].append(timed_render(app_mod, analysis, l2, MAX, "gray"))
        settle(app_mod, analysis, l2, MAX, "gray")
        # A head switch before the prefetcher reached it: one full drawing.
        reset_figures(app_mod)
        timed_render(app_mod, analysis, l2, MAX, "hide")
        s["mode_cold"].append(timed_render(app_mod, analysis, l2, "Head 1", "hide"))
    settle(app_mod, analysis, l2, "Head 1", "hide")
    return s


def view_components(analysis, reps: int = 3) -> dict:
    """Where render_view's time goes, piece by piece (no cache)."""
    from attn.figures import line_diagram, to_svg
    from attn.heatmap import heatmap_html
    from attn.highlight import token_html
    from attn.weights import View

    view = View(layer=min(PRESET_LAYER, analysis.num_layers - 1))
    parts = {"line_diagram": [], "to_svg": [], "token_html": [], "heatmap_html": []}
    for _ in range(reps):
        t = now()
        fig = line_diagram(analysis, view)
        parts["line_diagram"].append(now() - t)
        t = now()
        to_svg(fig)
        parts["to_svg"].append(now() - t)
        t = now()
        token_html(analysis, view)
        parts["token_html"].append(now() - t)
        t = now()
        heatmap_html(analysis, "mean", "gray", current_layer=view.layer)
        parts["heatmap_html"].append(now() - t)
    return parts


SWITCH_LABELS = [
    ("first_view", "first view of a new analysis"),
    ("layer_cold", "layer switch, cold (no wait)"),
    ("layer_prefetched", "layer switch, prefetched (the machine awake)"),
    ("layer_warm", "layer switch after 3 s idle (prefetched)"),
    ("idle_control", "control: the same view again after 3 s idle (a cache hit)"),
    ("head_switch", "head switch (mean -> max), after a dwell (prefetched)"),
    ("bos_switch", "BOS mode switch (gray -> hide), after a dwell (prefetched)"),
    ("mode_cold", "head switch, cold (not yet prefetched: one drawing)"),
]


def report_switches(rep: Report, section: str, label: str, s: dict, analysis_s: float, extra_note: str = ""):
    for key, what in SWITCH_LABELS:
        m = med(s[key])
        share = m / analysis_s if (m is not None and analysis_s) else None
        if key in ("layer_warm", "idle_control"):  # the VM's wake-up dominates: reported, not judged
            rep.check(section, f"{label}: {what}", fmt_s(m),
                      f"{share:.1%} of analysis ({fmt_s(analysis_s)}); no target: see the control row{extra_note}",
                      None)
            continue
        if key == "first_view":
            rep.check(section, f"{label}: {what}", fmt_s(m),
                      f"{share:.1%} of analysis ({fmt_s(analysis_s)}); no target{extra_note}", None)
            continue
        ok = share is not None and share <= SWITCH_SHARE and m * 1000 < SWITCH_MS
        rep.check(section, f"{label}: {what} <= 5% of analysis and < 100 ms", fmt_s(m),
                  f"{share:.1%} of {fmt_s(analysis_s)}{extra_note}", ok)


# ---- the phases ----------------------------------------------------------------------------
def phase_start(rep: Report, ctx: dict, launches: int) -> None:
    from attn import bundled

    target = bundled.checkpoint_dir()
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


def import_app(rep: Report, ctx: dict) -> None:
    for name in APP_ENV_DROP:
        os.environ.pop(name, None)
    t = now()
    import app as app_mod  # builds the Blocks and starts loading the default model

    t_import = now() - t
    loaded = app_mod.ENGINE.model(BUNDLED)  # the engine's loader is attn.models.load
    rep.raw["inprocess.import_app_s"] = t_import
    rep.raw["inprocess.import_and_load_s"] = now() - t
    ctx["app_mod"], ctx["loaded"] = app_mod, loaded
    ctx["variants"] = artist_variants(loaded.tokenizer)
    import torch

    rep.raw["torch_threads"] = torch.get_num_threads()


def phase_analysis(rep: Report, ctx: dict, reps: int) -> None:
    from attn import inference

    app_mod, loaded, app = ctx["app_mod"], ctx["loaded"], ctx["app"]
    c = client(app.url)
    base = n_tokens(loaded.tokenizer, ARTIST)
    # Warm-up (not counted): fonts, first client call, first kernels.
    p = next(ctx["variants"])
    c.predict(p, BUNDLED, api_name="/analyze")
    q = next(ctx["variants"])
    app_mod.get_analysis(q, BUNDLED)
    timed_render(app_mod, app_mod.get_analysis(q, BUNDLED), PRESET_LAYER, MEAN, "gray")
    settle(app_mod, app_mod.get_analysis(q, BUNDLED), PRESET_LAYER, MEAN, "gray")
    bare_forward(loaded, inference.encode(loaded.tokenizer, ARTIST)[0])

    s = {"bare_s": [], "api_s": [], "inproc_analysis_s": [], "inproc_views_s": [], "inproc_total_s": []}
    calls0 = app.stats()["forward_calls"]
    for i in range(reps):
        p_api, p_in = next(ctx["variants"]), next(ctx["variants"])

        def do_bare():
            s["bare_s"].append(bare_forward(loaded, inference.encode(loaded.tokenizer, p_api)[0]))

        def do_api():
            t = now()
            res = c.predict(p_api, BUNDLED, api_name="/analyze")
            s["api_s"].append(now() - t)
            assert res["prompt"] == p_api and len(res["tokens"]) == base

        def do_inproc():
            t = now()
            a = app_mod.get_analysis(p_in, BUNDLED)
            t1 = now()
            app_mod.render_view({"model": BUNDLED, "prompt": p_in}, PRESET_LAYER, MEAN, "gray", False)
            t2 = now()
            s["inproc_analysis_s"].append(t1 - t)
            s["inproc_views_s"].append(t2 - t1)
            s["inproc_total_s"].append(t2 - t)
            settle(app_mod, a, PRESET_LAYER, MEAN, "gray")  # let the prefetch finish before the next step

        steps = [do_bare, do_api, do_inproc]
        for step in steps[i % 3:] + steps[: i % 3]:  # rotate the order against drift
            step()
    calls = app.stats()["forward_calls"] - calls0
    # The fixed cost of one round trip, model aside: gradio_client vs plain HTTP on /stats.
    floor_client, floor_http = [], []
    for _ in range(5):
        t = now()
        c.predict(api_name="/stats")
        floor_client.append(now() - t)
        t = now()
        app.stats()
        floor_http.append(now() - t)
    rep.raw["analysis.stats_roundtrip_gradio_client_s"] = floor_client
    rep.raw["analysis.stats_roundtrip_plain_http_s"] = floor_http
    rep.raw["analysis.tokens"] = base
    rep.raw["analysis.server_forward_calls"] = calls
    rep.raw.update({f"analysis.{k}": v for k, v in s.items()})
    bare = med(s["bare_s"])
    api = med(s["api_s"])
    inproc = med(s["inproc_total_s"])
    # Verdict on the median of per-repeat ratios: each pair ran back to back, which
    # cancels the slow drift of a shared machine's load; the ratio of medians is shown too.
    api_r = med(a / b for a, b in zip(s["api_s"], s["bare_s"]))
    in_r = med(a / b for a, b in zip(s["inproc_total_s"], s["bare_s"]))
    rep.raw["analysis.paired_ratio_api"] = api_r
    rep.raw["analysis.paired_ratio_inproc"] = in_r
    rep.check("2 analysis", f"/analyze API round trip ({base} tokens) <= {ANALYSIS_RATIO}x bare forward",
              fmt_s(api), f"{api_r:.2f}x bare (paired; medians {fmt_s(api)} / {fmt_s(bare)} = {api / bare:.2f}x); "
              f"{calls} forward passes for {reps} requests; an empty call (/stats) costs "
              f"{fmt_s(med(floor_client))} through gradio_client, {fmt_s(med(floor_http))} over plain HTTP",
              api_r <= ANALYSIS_RATIO)
    rep.check("2 analysis", f"in-process analysis + views <= {ANALYSIS_RATIO}x bare forward",
              fmt_s(inproc), f"{in_r:.2f}x bare (paired; {inproc / bare:.2f}x of medians; analysis "
              f"{fmt_s(med(s['inproc_analysis_s']))} + views {fmt_s(med(s['inproc_views_s']))})",
              in_r <= ANALYSIS_RATIO)


def phase_concurrency(rep: Report, ctx: dict, rounds: int, n: int = 8) -> None:
    app = ctx["app"]
    clients = [client(app.url) for _ in range(n)]
    for c in clients:  # each client's first call (connection set-up) is not counted
        c.predict(api_name="/stats")
    order = ["seq", "conc", "conc", "seq"] * ((rounds + 1) // 2) if rounds > 1 else ["seq", "conc"]
    order = order[: max(2, 2 * rounds)]
    batches = []
    for mode in order:
        prompts = [next(ctx["variants"]) for _ in range(n)]
        results: list = [None] * n
        latencies: list = [None] * n
        calls0 = app.stats()["forward_calls"]
        if mode == "seq":
            t = now()
            for i, p in enumerate(prompts):
                t1 = now()
                try:
                    results[i] = clients[0].predict(p, BUNDLED, api_name="/analyze")
                except Exception as exc:
                    results[i] = exc
                latencies[i] = now() - t1
            wall = now() - t
        else:
            barrier = threading.Barrier(n + 1)

            def worker(i):
                barrier.wait()
                t1 = now()
                try:
                    results[i] = clients[i].predict(prompts[i], BUNDLED, api_name="/analyze")
                except Exception as exc:
                    results[i] = exc
                latencies[i] = now() - t1

            threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
            for th in threads:
                th.start()
            barrier.wait()
            t = now()
            for th in threads:
                th.join(timeout=600)
            wall = now() - t
        answered = sum(isinstance(r, dict) and r.get("prompt") == p for r, p in zip(results, prompts))
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
        batches.append({"mode": mode, "wall_s": wall, "throughput_rps": n / wall, "answered": answered,
                        "latencies_s": latencies, "errors": errors[:3],
                        "forward_calls": app.stats()["forward_calls"] - calls0})
    rep.raw["concurrency.batches"] = batches
    seq = med(b["throughput_rps"] for b in batches if b["mode"] == "seq")
    conc = med(b["throughput_rps"] for b in batches if b["mode"] == "conc")
    conc_batches = [b for b in batches if b["mode"] == "conc"]
    all_answered = all(b["answered"] == n for b in batches)
    rep.check("5 concurrency", f"{n} clients at once: every request answered",
              f"{sum(b['answered'] for b in conc_batches)}/{n * len(conc_batches)}",
              "all answered" if all_answered else f"errors: {[b['errors'] for b in batches if b['errors']]}",
              all_answered)
    rep.check("5 concurrency", f"{n} clients at once: throughput >= 1 client sequential",
              f"{conc:.2f} req/s", f"{conc / seq:.2f}x sequential ({seq:.2f} req/s); "
              f"p50 latency {fmt_s(med(x for b in conc_batches for x in b['latencies_s']))}", conc >= seq)


def phase_switching(rep: Report, ctx: dict, sizes: list[int], reps: dict) -> None:
    from attn import inference

    app_mod, loaded = ctx["app_mod"], ctx["loaded"]
    for size in sizes:
        prompt = ARTIST if size == n_tokens(loaded.tokenizer, ARTIST) else sized_prompt(loaded.tokenizer, size)
        tokens = n_tokens(loaded.tokenizer, prompt)
        label = f"{tokens} tokens"
        log(f"switching views at {label}")
        # The in-process analysis of the same prompt (uncached), once per repeat, right
        # before that repeat's views; each result goes into the engine's cache.
        s = view_switches(app_mod, None, reps[size],
                          analyze=lambda: inference.analyze(loaded, prompt, max_tokens=max(4096, tokens)))
        analysis = app_mod.ENGINE.cached(prompt, BUNDLED)
        rep.raw[f"switch.{tokens}"] = s
        rep.raw[f"switch.{tokens}.components_s"] = view_components(analysis)
        rep.raw[f"nbytes.{tokens}"] = analysis.nbytes
        report_switches(rep, "3 switching", label, s, med(s["analysis_s"]))


def phase_long(rep: Report, ctx: dict, sizes: list[int], long_size: int, long_reps: int, view_reps: int) -> None:
    tmp = ctx["tmp"]
    results = {}
    for size in sizes:
        log(f"long prompts: subprocess at {size} tokens")
        extra = ["--child-size", str(size), "--child-reps", str(long_reps if size == long_size else 1)]
        pick = tmp / f"analysis-{size}.pkl"
        if size == long_size:
            extra += ["--child-pickle", str(pick)]
        results[size] = run_child(extra, timeout=900, tmp=tmp)
    rep.raw["long.children"] = {k: {kk: vv for kk, vv in v.items() if kk != "prompt"} for k, v in results.items()}
    big = results[long_size]
    an, bare = med(big["analyze_s"]), med(big["bare_s"])
    rep.check("4 long prompts", f"analysis at {big['tokens']} tokens <= {LONG_RATIO:.0f}x bare forward",
              fmt_s(an), f"{an / bare:.2f}x bare ({fmt_s(bare)})", an / bare <= LONG_RATIO)
    for size, r in results.items():
        rep.check("4 long prompts", f"{r['tokens']} tokens: peak RSS of a fresh process (VmHWM), load + analysis",
                  fmt_mb(r["rss_after_analyze"]),
                  f"analysis adds {fmt_mb(r['rss_after_analyze'] - r['rss_after_warmup'])} over the loaded "
                  f"model ({fmt_mb(r['rss_after_warmup'])}); peak after a bare forward too: "
                  f"{fmt_mb(r['rss_after_bare'])}", None)
    for size, r in results.items():
        rep.check("4 long prompts", f"{r['tokens']} tokens: bytes per cached analysis (Analysis.nbytes)",
                  fmt_mb(r["nbytes"]), f"{r['nbytes']:,} B; full matrices kept: {r['full_matrices']}", None)
    # The views at the long size, on the analysis the child computed (no forward pass here).
    app_mod = ctx.get("app_mod")
    if app_mod is None:
        return
    with open(tmp / f"analysis-{long_size}.pkl", "rb") as f:
        analysis = pickle.load(f)
    app_mod.ENGINE.cache.put((analysis.model, analysis.prompt), analysis)
    assert app_mod.ENGINE.cached(analysis.prompt, analysis.model) is not None, "analysis did not fit the cache"
    s = view_switches(app_mod, analysis, view_reps)
    rep.raw[f"long.views.{analysis.num_tokens}"] = s
    rep.raw[f"long.views.{analysis.num_tokens}.components_s"] = view_components(analysis)
    report_switches(rep, "4 long prompts", f"views at {analysis.num_tokens} tokens", s, an,
                    " (analysis in a subprocess)")


def phase_full(rep: Report, ctx: dict) -> None:
    """--full: the naive GGUF load and the first-ever launch (conversion)."""
    log("--full: naive GGUF load in a subprocess (about a minute)")
    g = run_child(["--child-gguf"], timeout=1800, tmp=ctx["tmp"])
    rep.raw["full.gguf"] = g
    cached = med(v["load_s"] for v in rep.raw.get("long.children", {}).values()) if rep.raw.get("long.children") else None
    rep.check("1 start (--full)", "naive GGUF load vs load from the converted cache", fmt_s(g["gguf_load_s"]),
              f"{g['gguf_load_s'] / cached:.1f}x the cached load ({fmt_s(cached)}, fresh process)" if cached
              else "cached load not measured", None)
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


# ---- output --------------------------------------------------------------------------------
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, (int, str, bool)) or x is None:
        return x
    return str(x)


def markdown(rep: Report, meta: dict) -> str:
    lines = [
        "# Attention explorer benchmark",
        "",
        f"`{meta['command']}` · {meta['date']} · commit {meta['commit']} · {meta['cpus']} CPUs "
        f"({meta['torch_threads']} torch threads) · load average {meta['loadavg_start']} -> {meta['loadavg_end']} "
        f"· {meta['mode']} mode · {meta['elapsed_s']:.0f} s",
        "",
        "| # | Target | Measured | Ratio / verdict | Result |",
        "|---|---|---|---|---|",
    ]
    for r in rep.rows:
        cells = [r["section"], r["target"], r["measured"], r["verdict"], f"**{r['status']}**"
                 if r["status"] in ("FAIL", "ERROR") else r["status"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    counts = {k: sum(r["status"] == k for r in rep.rows) for k in ("PASS", "FAIL", "ERROR")}
    lines += ["", f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors "
              "(INFO rows have no target).", "", "## Raw numbers (seconds unless named otherwise)", "", "```"]
    for k, v in rep.raw.items():
        lines.append(f"{k}: {json.dumps(_jsonable(v))}")
    lines.append("```")
    if rep.errors:
        lines += ["", "## Errors", "", "```", *rep.errors, "```"]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, one launch, 1024 instead of 2048 tokens, no 37/512 subprocesses (~2 min)")
    ap.add_argument("--full", action="store_true", help="also the naive GGUF load and the first-ever launch (slow)")
    ap.add_argument("--out", help="write the markdown report here")
    ap.add_argument("--json", help="write rows and raw numbers as JSON here")
    ap.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-reps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child-pickle", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--child-gguf", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_gguf:
        gguf_child_main(args)
        return 0
    if args.child_size:
        child_main(args)
        return 0

    # A TERM (e.g. a CI timeout) must still run the finally below that stops app.py.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(quiet_env({}))  # progress bars off, offline, no analytics (in-process too)
    for name in SECRET_ENV:
        os.environ.pop(name, None)

    if args.quick:  # the long size doubles as the ~1000-token view test
        cfg = dict(launches=1, analysis_reps=3, switch_sizes=[37], switch_reps={37: 3},
                   long_sizes=[1024], long_size=1024, long_reps=1, long_view_reps=1, conc_rounds=1)
    else:
        cfg = dict(launches=3, analysis_reps=7, switch_sizes=[37, 1000], switch_reps={37: 4, 1000: 2},
                   long_sizes=[37, 512, 2048], long_size=2048, long_reps=1,
                   long_view_reps=1, conc_rounds=2)
    t_begin = now()
    meta = {
        "command": "python bench/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "mode": "quick" if args.quick else ("full" if args.full else "default"),
        "cache_dir_env": os.environ.get("ATTN_CACHE_DIR"),
        "config": cfg,
        "torch_threads": "?",
    }
    rep = Report()
    tmp = Path(tempfile.mkdtemp(prefix="attn-bench-"))
    ctx: dict = {"apps": [], "tmp": tmp}
    log(f"logs and scratch files in {tmp}")
    try:
        try:
            phase_mark("1 start")
            phase_start(rep, ctx, cfg["launches"])
        except Exception as exc:
            rep.error("1 start", exc)
        phase_mark("import app in-process (loads the model here)")
        try:
            import_app(rep, ctx)
        except Exception as exc:  # phases 2, 3 and 5 need it; 4 runs its subprocesses anyway
            rep.error("import app", exc)
        meta["torch_threads"] = rep.raw.get("torch_threads", "?")
        if "app" not in ctx and "app_mod" in ctx:  # the start phase failed: still get a server for 2 and 5
            try:
                res = measure_launch(ctx["apps"], tmp)
                ctx["app"] = res.pop("app")
            except Exception as exc:
                rep.error("2/5 server", exc)
        if "app" in ctx and "app_mod" in ctx:
            for name, fn in (("2 analysis", lambda: phase_analysis(rep, ctx, cfg["analysis_reps"])),
                             ("5 concurrency", lambda: phase_concurrency(rep, ctx, cfg["conc_rounds"]))):
                phase_mark(name)
                try:
                    fn()
                except Exception as exc:
                    rep.error(name, exc)
        if "app" in ctx:
            ctx["app"].stop()  # the rest runs in this process and in children: keep the CPU quiet
        if "app_mod" in ctx:
            phase_mark("3 switching")
            try:
                phase_switching(rep, ctx, cfg["switch_sizes"], cfg["switch_reps"])
            except Exception as exc:
                rep.error("3 switching", exc)
        phase_mark("4 long prompts")
        try:
            phase_long(rep, ctx, cfg["long_sizes"], cfg["long_size"], cfg["long_reps"], cfg["long_view_reps"])
        except Exception as exc:
            rep.error("4 long prompts", exc)
        if args.full:
            try:
                phase_mark("1 start (--full)")
                phase_full(rep, ctx)
            except Exception as exc:
                rep.error("1 start (--full)", exc)
    finally:
        for app in ctx["apps"]:
            with contextlib.suppress(Exception):
                app.stop()
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["loadavg_by_phase"] = LOADAVG
    meta["elapsed_s"] = now() - t_begin
    rep.raw = {"meta": meta, **rep.raw}
    text = markdown(rep, meta)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable({"meta": meta, "rows": rep.rows, "raw": rep.raw,
                                                         "errors": rep.errors}), indent=1), encoding="utf-8")
    if rep.errors:
        log(f"errors: app logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(r["status"] == "ERROR" for r in rep.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
