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
   answered <= 30 s) and the conversion against transformers' GGUF loader.
2. Analysis: /analyze through gradio_client (a new prompt each repeat, one word varied
   at the same token count, so no cache answers) and, in this process, the engine's analyze
   + the page's on_view, each against a bare `model(input_ids, output_attentions=True)` on
   the same token ids, run back to back in rotating order (target <= 1.5x; the verdict
   is the median of the per-repeat ratios).
3. Switching layer / head / BOS mode: the page's on_view on a cached analysis at 37 and
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
6. Measures: token ablation of the artist passage (36 deletions, batched, uncached) vs
   one bare forward, paired and alternating (target <= 8x); switching the measure
   (raw -> value-weighted -> rollout -> raw) on the cached analysis, cold, vs the
   in-process analysis (target <= 5% and < 100 ms).
7. Generation and comparison (bench/generation.py), in this process: 16 generated tokens
   with every step's attention vs model.generate alone (target <= 1.5x), and a comparison
   of two new prompts vs one bare forward of the longer one (target <= 2.2x).
8. Profiles (bench/profiles.py), in this process: /analyze as the server runs it (the page's
   Api.analyze, new prompts) and an analysis and its JSON, with the head profiles and
   sentence shares vs without them, paired and alternating, at 37 and 2048 tokens (target
   <= 1.1x); --full adds peak RSS of fresh processes at 2048 tokens with and
   without them (target <= 1.1x).

The model is loaded once here through the app's own engine (whose loader is
attn.model.loading.load), so the bare forward pass and the in-process analysis use the very
same weights. The bare pass runs under torch.inference_mode(), like the analysis.

ATTN_CACHE_DIR is honoured (children inherit it); unset, the app's default is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python bench/benchmark.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.analysis import phase_analysis
from bench.children import child_main, gguf_child_main
from bench.common import LOADAVG, ROOT, SECRET_ENV, Report, log, now, phase_mark, quiet_env
from bench.concurrency import phase_concurrency
from bench.generation import phase_generation
from bench.inprocess import import_app
from bench.long import phase_long
from bench.measures import phase_measures
from bench.profiles import phase_profiles
from bench.start import measure_launch, phase_full, phase_start
from bench.switching import phase_step_and_compare, phase_switching


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
    ap.add_argument("--full", action="store_true",
                    help="also the conversion vs transformers' GGUF loader and the first-ever launch (slow)")
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
                   long_sizes=[1024], long_size=1024, long_reps=1, long_view_reps=1, conc_rounds=1,
                   measure_reps=3, gen_reps=2, profile_sizes=[37, 1024], profile_reps=3)
    else:
        cfg = dict(launches=3, analysis_reps=7, switch_sizes=[37, 1000], switch_reps={37: 4, 1000: 2},
                   long_sizes=[37, 512, 2048], long_size=2048, long_reps=1,
                   long_view_reps=1, conc_rounds=2, measure_reps=5, gen_reps=5, profile_sizes=[37, 2048],
                   profile_reps=7)
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
        phase_mark("the page in-process: app.create_page (loads the model here)")
        try:
            import_app(rep, ctx)
        except Exception as exc:  # phases 2, 3 and 5 need it; 4 runs its subprocesses anyway
            rep.error("import app", exc)
        meta["torch_threads"] = rep.raw.get("torch_threads", "?")
        if "app" not in ctx and "page" in ctx:  # the start phase failed: still get a server for 2 and 5
            try:
                res = measure_launch(ctx["apps"], tmp)
                ctx["app"] = res.pop("app")
            except Exception as exc:
                rep.error("2/5 server", exc)
        if "app" in ctx and "page" in ctx:
            for name, fn in (("2 analysis", lambda: phase_analysis(rep, ctx, cfg["analysis_reps"])),
                             ("5 concurrency", lambda: phase_concurrency(rep, ctx, cfg["conc_rounds"]))):
                phase_mark(name)
                try:
                    fn()
                except Exception as exc:
                    rep.error(name, exc)
        if "app" in ctx:
            ctx["app"].stop()  # the rest runs in this process and in children: keep the CPU quiet
        if "page" in ctx:
            phase_mark("3 switching")
            try:
                phase_switching(rep, ctx, cfg["switch_sizes"], cfg["switch_reps"])
                phase_step_and_compare(rep, ctx, cfg["measure_reps"])
            except Exception as exc:
                rep.error("3 switching", exc)
            phase_mark("6 measures")
            try:
                phase_measures(rep, ctx, cfg["measure_reps"])
            except Exception as exc:
                rep.error("6 measures", exc)
        phase_mark("4 long prompts")
        try:
            phase_long(rep, ctx, cfg["long_sizes"], cfg["long_size"], cfg["long_reps"], cfg["long_view_reps"])
        except Exception as exc:
            rep.error("4 long prompts", exc)
        if "loaded" in ctx:
            phase_mark("7 generation")
            try:
                phase_generation(rep, ctx, cfg["gen_reps"])
            except Exception as exc:
                rep.error("7 generation", exc)
            phase_mark("8 profiles")
            try:
                phase_profiles(rep, ctx, cfg["profile_sizes"], cfg["profile_reps"], 2 if args.full else 0)
            except Exception as exc:
                rep.error("8 profiles", exc)
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
