"""Phase 3, switching layer / head / BOS mode on a cached analysis."""

from __future__ import annotations

from bench.common import BUNDLED, Report, log, med
from bench.inprocess import report_switches, view_components, view_switches
from bench.prompts import ARTIST, n_tokens, sized_prompt


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
