"""Phase 4, long prompts: analysis vs bare forward, peak RSS per size, views at 2048 tokens."""

from __future__ import annotations

import pickle

from bench.children import run_child
from bench.common import LONG_RATIO, Report, fmt_mb, fmt_s, log, med
from bench.inprocess import report_switches, view_components, view_switches


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
    page = ctx.get("page")
    if page is None:
        return
    with open(tmp / f"analysis-{long_size}.pkl", "rb") as f:
        analysis = pickle.load(f)
    page.engine.cache.put((analysis.model, analysis.prompt), analysis)
    assert page.engine.cached(analysis.prompt, analysis.model) is not None, "analysis did not fit the cache"
    s = view_switches(page, analysis, view_reps)
    rep.raw[f"long.views.{analysis.num_tokens}"] = s
    rep.raw[f"long.views.{analysis.num_tokens}.components_s"] = view_components(analysis)
    report_switches(rep, "4 long prompts", f"views at {analysis.num_tokens} tokens", s, an,
                    " (analysis in a subprocess)")
