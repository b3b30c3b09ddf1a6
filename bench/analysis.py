"""Phase 2, analysis: /analyze and the in-process analysis against a bare forward pass."""

from __future__ import annotations

from bench.common import ANALYSIS_RATIO, BUNDLED, MEAN, Report, fmt_s, med, now
from bench.inprocess import bare_forward, settle, shown_analysis, timed_render
from bench.prompts import ARTIST, PRESET_LAYER, n_tokens
from bench.start import client


def phase_analysis(rep: Report, ctx: dict, reps: int) -> None:
    from attn.compute.encode import encode

    page, loaded, app = ctx["page"], ctx["loaded"], ctx["app"]
    c = client(app.url)
    base = n_tokens(loaded.tokenizer, ARTIST)
    # Warm-up (not counted): fonts, first client call, first kernels.
    p = next(ctx["variants"])
    c.predict(p, BUNDLED, api_name="/analyze")
    q = next(ctx["variants"])
    page.engine.analyze(q, BUNDLED)
    timed_render(page, page.engine.analyze(q, BUNDLED), PRESET_LAYER, MEAN, "gray")
    settle(page, page.engine.analyze(q, BUNDLED), PRESET_LAYER, MEAN, "gray")
    bare_forward(loaded, encode(loaded.tokenizer, ARTIST)[0])

    s = {"bare_s": [], "api_s": [], "inproc_analysis_s": [], "inproc_views_s": [], "inproc_total_s": []}
    calls0 = app.stats()["forward_calls"]
    for i in range(reps):
        p_api, p_in = next(ctx["variants"]), next(ctx["variants"])

        def do_bare():
            s["bare_s"].append(bare_forward(loaded, encode(loaded.tokenizer, p_api)[0]))

        def do_api():
            t = now()
            res = c.predict(p_api, BUNDLED, api_name="/analyze")
            s["api_s"].append(now() - t)
            assert res["prompt"] == p_api and len(res["tokens"]) == base

        def do_inproc():
            t = now()
            a = page.engine.analyze(p_in, BUNDLED)
            t1 = now()
            page.handlers.on_view(shown_analysis(a), 0, PRESET_LAYER, MEAN, "gray", False, "raw", False)
            t2 = now()
            s["inproc_analysis_s"].append(t1 - t)
            s["inproc_views_s"].append(t2 - t1)
            s["inproc_total_s"].append(t2 - t)
            settle(page, a, PRESET_LAYER, MEAN, "gray")  # let the prefetch finish before the next step

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
