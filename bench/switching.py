"""Phase 3, switching layer / head / BOS mode on a cached analysis."""

from __future__ import annotations

from bench.common import BUNDLED, Report, fmt_s, log, med, now
from bench.inprocess import report_switches, view_components, view_switches
from bench.prompts import ARTIST, n_tokens, sized_prompt


def phase_switching(rep: Report, ctx: dict, sizes: list[int], reps: dict) -> None:
    from attn.compute import forward as inference

    page, loaded = ctx["page"], ctx["loaded"]
    for size in sizes:
        prompt = ARTIST if size == n_tokens(loaded.tokenizer, ARTIST) else sized_prompt(loaded.tokenizer, size)
        tokens = n_tokens(loaded.tokenizer, prompt)
        label = f"{tokens} tokens"
        log(f"switching views at {label}")
        # The in-process analysis of the same prompt (uncached), once per repeat, right
        # before that repeat's views; each result goes into the engine's cache.
        s = view_switches(page, None, reps[size],
                          analyze=lambda: inference.analyze(loaded, prompt, max_tokens=max(4096, tokens)))
        analysis = page.engine.cached(prompt, BUNDLED)
        rep.raw[f"switch.{tokens}"] = s
        rep.raw[f"switch.{tokens}.components_s"] = view_components(analysis)
        rep.raw[f"nbytes.{tokens}"] = analysis.nbytes
        report_switches(rep, "3 switching", label, s, med(s["analysis_s"]))


def phase_step_and_compare(rep: Report, ctx: dict, reps: int) -> None:
    """A step switch in a 16-token continuation of the artist passage, and a view switch
    (layer) of a comparison of two artist variants, each cold (nothing drawn ahead), against
    one in-process analysis of the artist passage (targets <= 5% and < 100 ms)."""
    from attn.compute import forward as inference
    from attn.web.subject import Shown, Subject
    from bench.inprocess import reset_figures, timed_view

    page, loaded = ctx["page"], ctx["loaded"]
    engine = page.engine
    other = ARTIST.replace(" blue ", " red ")  # one word changed
    generated = engine.generate(ARTIST, BUNDLED, 16)
    gen_key = Shown(Subject(BUNDLED, ARTIST, continuation=generated.continuation), generation=generated)
    cmp_key = Shown(Subject(BUNDLED, ARTIST, compare=other), comparison=engine.compare(ARTIST, other, BUNDLED))
    analysis_s, steps, sides = [], [], []
    for i in range(reps):
        t = now()
        inference.analyze(loaded, ARTIST)
        analysis_s.append(now() - t)
        reset_figures(page)
        timed_view(page, gen_key, i % 8, 12, "Mean over heads", "gray")
        steps.append(timed_view(page, gen_key, i % 8 + 1, 12, "Mean over heads", "gray"))
        timed_view(page, cmp_key, 0, 12, "Mean over heads", "gray")
        sides.append(timed_view(page, cmp_key, 0, 11 - i % 3, "Mean over heads", "gray"))
    rep.raw["switch.step_s"], rep.raw["switch.compare_s"], rep.raw["switch.step_analysis_s"] = steps, sides, analysis_s
    a = med(analysis_s)
    for what, xs in (("continuation of 16 tokens: step switch", steps),
                     ("comparison (the artist passage and one word changed): layer switch, both sides redrawn", sides)):
        m = med(xs)
        rep.check("3 switching", f"{what}, cold, <= 5% of analysis and < 100 ms", fmt_s(m),
                  f"{m / a:.1%} of {fmt_s(a)}", m / a <= 0.05 and m * 1000 < 100)
