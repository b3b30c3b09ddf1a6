"""Issue 22: what the head profiles cost the analysis (attn/compute/profiles.py).

- Time: an analysis and its JSON (what /analyze computes and returns: the one forward pass
  with the logit lens, value norms and rollout) with the profiles reduced inside the pass
  against the same analysis without them, back to back in alternating order, at the artist passage (37 tokens) and at
  2048 tokens; the verdict is the median of the paired ratios (target <= 1.1x), of wall-clock
  time and, beside it, of this process's CPU time (which a busy shared machine disturbs less).
- Memory: peak RSS (VmHWM) of fresh processes, load + one analysis at 2048 tokens, with and
  without the profiles (target <= 1.1x), each twice, interleaved.

`python bench/profiles.py [--reps N] [--sizes 37,2048] [--memory-runs 2]`; bench/benchmark.py runs
the same as its phase 8 (`phase_profiles`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/profiles.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.common import BUNDLED, ROOT, fmt_mb, fmt_s, med, now, peak_rss, quiet_env
from bench.prompts import ARTIST, artist_variants, n_tokens, sized_prompt

PROFILE_RATIO = 1.1
MEMORY_TOKENS = 2048


def load():
    os.environ.setdefault("ATTN_DEVICE", "cpu")
    from attn.model import loading
    from attn.settings import Settings

    return loading.load(BUNDLED, Settings.from_env(), lambda msg: None)


def timed(loaded, encoded, prompt: str, with_profiles: bool) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one analysis and its JSON, what /analyze computes and returns."""
    import json

    from attn.compute.forward import forward

    t, c = now(), time.process_time()
    json.dumps(forward(loaded, prompt, encoded, with_profiles=with_profiles).to_json())
    return now() - t, time.process_time() - c


def time_pairs(loaded, size: int, reps: int) -> dict:
    from attn.compute.encode import encode

    tok = loaded.tokenizer
    prompt = ARTIST if size == n_tokens(tok, ARTIST) else sized_prompt(tok, size)
    encoded = encode(tok, prompt, max_tokens=max(4096, size))
    timed(loaded, encoded, prompt, True)  # warm-up
    out = {"tokens": len(encoded.ids), "with_s": [], "without_s": [], "ratios": [], "with_cpu_s": [],
           "without_cpu_s": [], "cpu_ratios": []}
    for i in range(reps):
        pair = {}
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            pair[on] = timed(loaded, encoded, prompt, on)
        for k, kind in ((0, ""), (1, "cpu_")):
            out[f"with_{kind}s"].append(pair[True][k])
            out[f"without_{kind}s"].append(pair[False][k])
            out[f"{kind}ratios"].append(pair[True][k] / pair[False][k])
    return out


def api_pairs(page, tokenizer, reps: int) -> dict:
    """/analyze as the server runs it (Api.analyze in this process: the engine, its cache and
    the JSON; the HTTP around it is the same either way), on new prompts of the artist
    passage's length, with the profiles against without them (the engine's forward pass
    called with with_profiles=False), paired, alternating."""
    import functools

    import attn.compute.forward as passes

    whole = passes.forward
    prompts = (p for p in artist_variants(tokenizer) if page.engine.cached(p, BUNDLED) is None)  # earlier phases'
    out = {"with_s": [], "without_s": [], "ratios": []}
    for i in range(reps + 1):  # the first pair warms up
        pair = {}
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            passes.forward = whole if on else functools.partial(whole, with_profiles=False)
            try:
                t = now()
                answer = page.api.analyze(next(prompts), BUNDLED)
                pair[on] = now() - t
            finally:
                passes.forward = whole
            assert (answer["profiles"] is not None) == on, "the profiles were not switched"
        if i:
            out["with_s"].append(pair[True])
            out["without_s"].append(pair[False])
            out["ratios"].append(pair[True] / pair[False])
    return out


def memory_child(with_profiles: bool) -> None:
    """A fresh process: load, warm up, then one analysis at 2048 tokens; prints peak RSS in bytes."""
    from attn.compute.encode import encode
    from attn.compute.forward import analyze, forward

    loaded = load()
    prompt = sized_prompt(loaded.tokenizer, MEMORY_TOKENS)
    analyze(loaded, "Warm up")
    loaded_rss = peak_rss()
    forward(loaded, prompt, encode(loaded.tokenizer, prompt, max_tokens=4096), with_profiles=with_profiles)
    print(f"{loaded_rss} {peak_rss()}", flush=True)


def memory(runs: int) -> dict:
    out: dict = {"with": [], "without": [], "loaded": []}
    for _ in range(runs):
        for on in (True, False):
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child",
                                   "on" if on else "off"], cwd=ROOT, env=quiet_env(os.environ), check=True,
                                  stdout=subprocess.PIPE, text=True)
            loaded_rss, peak = (int(x) for x in proc.stdout.split()[-2:])
            out["with" if on else "without"].append(peak)
            out["loaded"].append(loaded_rss)
    return out


def phase_profiles(rep, ctx: dict, sizes: list[int], reps: int, memory_runs: int) -> None:
    """Phase 8 of bench/benchmark.py: the rows of issue 22 (the profiles' cost) in its table."""
    loaded = ctx["loaded"]
    if "page" in ctx:
        r = api_pairs(ctx["page"], loaded.tokenizer, reps)
        rep.raw["profiles.api"] = r
        ratio = med(r["ratios"])
        tokens = n_tokens(loaded.tokenizer, ARTIST)
        rep.check("8 profiles", f"{tokens} tokens: /analyze as the server runs it (Api.analyze in process, new "
                  f"prompts) with the head profiles and sentence shares <= {PROFILE_RATIO}x without",
                  f"{fmt_s(med(r['with_s']))} vs {fmt_s(med(r['without_s']))}",
                  f"{ratio:.3f}x (median of {len(r['ratios'])} paired ratios, alternating)", ratio <= PROFILE_RATIO)
    for size in sizes:
        r = time_pairs(loaded, size, reps if size < 1024 else max(3, reps // 2))
        rep.raw[f"profiles.{r['tokens']}"] = r
        ratio = med(r["ratios"])
        rep.check("8 profiles", f"{r['tokens']} tokens: an analysis and its JSON (what /analyze computes and returns) "
                  f"with the head profiles and sentence shares <= {PROFILE_RATIO}x without them",
                  f"{fmt_s(med(r['with_s']))} vs {fmt_s(med(r['without_s']))}",
                  f"{ratio:.3f}x (median of {len(r['ratios'])} paired ratios, alternating); CPU time "
                  f"{med(r['cpu_ratios']):.3f}x", ratio <= PROFILE_RATIO)
    if memory_runs:
        m = memory(memory_runs)
        rep.raw["profiles.memory"] = m
        ratio = med(m["with"]) / med(m["without"])
        rep.check("8 profiles", f"peak RSS (VmHWM) of fresh processes at {MEMORY_TOKENS} tokens, load + analysis, "
                  f"with the profiles <= {PROFILE_RATIO}x without", f"{fmt_mb(med(m['with']))} vs "
                  f"{fmt_mb(med(m['without']))}", f"{ratio:.3f}x (median of {memory_runs} each, interleaved; "
                  f"loaded {fmt_mb(med(m['loaded']))})", ratio <= PROFILE_RATIO)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--sizes", default=f"37,{MEMORY_TOKENS}")
    ap.add_argument("--memory-runs", type=int, default=2)
    ap.add_argument("--memory-child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child == "on")
        return 0
    os.environ.update(quiet_env({}))
    ok = True
    if args.reps:
        loaded = load()
        for size in (int(s) for s in args.sizes.split(",")):
            r = time_pairs(loaded, size, args.reps if size < 1024 else max(3, args.reps // 2))
            ratio = med(r["ratios"])
            ok &= ratio <= PROFILE_RATIO
            print(f"analysis at {r['tokens']} tokens, with profiles vs without: {fmt_s(med(r['with_s']))} vs "
                  f"{fmt_s(med(r['without_s']))}: {ratio:.3f}x wall (median of {len(r['ratios'])} paired ratios; "
                  f"{', '.join(f'{x:.3f}' for x in r['ratios'])}); CPU {fmt_s(med(r['with_cpu_s']))} vs "
                  f"{fmt_s(med(r['without_cpu_s']))}: {med(r['cpu_ratios']):.3f}x "
                  f"({', '.join(f'{x:.3f}' for x in r['cpu_ratios'])}); load average {os.getloadavg()[0]:.1f}",
                  flush=True)
    if args.memory_runs:
        m = memory(args.memory_runs)
        ratio = med(m["with"]) / med(m["without"])
        ok &= ratio <= PROFILE_RATIO
        print(f"peak RSS at {MEMORY_TOKENS} tokens, load + analysis, with profiles vs without: "
              f"{fmt_mb(med(m['with']))} vs {fmt_mb(med(m['without']))}: {ratio:.3f}x "
              f"(loaded: {fmt_mb(med(m['loaded']))}; runs {[fmt_mb(x) for x in m['with']]} vs "
              f"{[fmt_mb(x) for x in m['without']]})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
