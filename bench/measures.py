"""Phase 6, does attention explain the prediction: token ablation of the artist passage
against one bare forward pass (target <= 8x), and switching the measure on a cached
analysis against the analysis itself (target <= 5% and < 100 ms, as for layer switches)."""

from __future__ import annotations

from bench.common import BUNDLED, MEAN, SWITCH_MS, SWITCH_SHARE, Report, fmt_s, log, med, now
from bench.inprocess import bare_forward, reset_figures, settle, timed_render
from bench.prompts import ARTIST, PRESET_LAYER

ABLATION_RATIO = 8.0


def phase_measures(rep: Report, ctx: dict, reps: int) -> None:
    from attn import Engine
    from attn.compute import forward as inference

    page, loaded = ctx["page"], ctx["loaded"]
    engine = page.engine
    analysis = engine.analyze(ARTIST, BUNDLED)
    ids = analysis.token_ids.tolist()
    deletions = analysis.num_tokens - 1
    log(f"ablation of the artist passage ({deletions} deletions) vs a bare forward, {reps} repeats")
    bare, ablation, ratios = [], [], []
    for i in range(reps):  # back to back, the order alternating
        pair = {}
        for job in (("bare", "ablation") if i % 2 == 0 else ("ablation", "bare")):
            if job == "bare":
                pair[job] = bare_forward(loaded, ids)
            else:
                fresh = Engine(loader=lambda name, progress: loaded, model_names=[BUNDLED])  # nothing cached
                fresh.cache.put((BUNDLED, ARTIST), analysis)  # the analysis the page already has
                t = now()
                fresh.ablate(ARTIST, BUNDLED)
                pair[job] = now() - t
        bare.append(pair["bare"])
        ablation.append(pair["ablation"])
        ratios.append(pair["ablation"] / pair["bare"])
    rep.raw["measures.ablation_s"], rep.raw["measures.bare_s"] = ablation, bare
    ratio = med(ratios)
    rep.check("6 measures", f"ablation of the artist passage ({deletions} deletions, batched) <= 8x one bare "
              "forward with attentions", f"{fmt_s(med(ablation))} vs {fmt_s(med(bare))}",
              f"**{ratio:.2f}x** (median of paired ratios)", ratio <= ABLATION_RATIO)

    log("measure switches on the cached artist passage")
    analysis_s = []
    switches: dict[str, list] = {"value": [], "rollout": [], "raw": []}
    layer = min(PRESET_LAYER, analysis.num_layers - 1)
    for _ in range(reps):
        t = now()
        inference.analyze(loaded, ARTIST)
        analysis_s.append(now() - t)
        reset_figures(page)  # cold: nothing of the new measure drawn ahead
        timed_render(page, analysis, layer, MEAN, "gray")
        settle(page, analysis, layer, MEAN, "gray")
        reset_figures(page)
        for measure in ("value", "rollout", "raw"):
            switches[measure].append(timed_render(page, analysis, layer, MEAN, "gray", measure))
            settle(page, analysis, layer, MEAN, "gray", measure=measure)
            reset_figures(page)
    rep.raw["measures.switch_s"], rep.raw["measures.analysis_s"] = switches, analysis_s
    a = med(analysis_s)
    for measure, what in (("value", "raw -> value-weighted"), ("rollout", "value-weighted -> rollout"),
                          ("raw", "rollout -> raw")):
        m = med(switches[measure])
        share = m / a
        rep.check("6 measures", f"measure switch {what}, cold (one drawing) <= 5% of analysis and < 100 ms",
                  fmt_s(m), f"{share:.1%} of {fmt_s(a)}", share <= SWITCH_SHARE and m * 1000 < SWITCH_MS)
