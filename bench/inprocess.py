"""In-process helpers (the page built here by app.create_page): the bare forward pass, the
view-switch timings."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from bench.common import APP_ENV_DROP, BUNDLED, MAX, MEAN, SWITCH_MS, SWITCH_SHARE, Report, fmt_s, log, med, now
from bench.prompts import PRESET_LAYER, artist_variants


def bare_forward(loaded, ids) -> float:
    import torch

    x = torch.tensor([ids], device=loaded.device)
    t = now()
    with torch.inference_mode():
        out = loaded.model(x, output_attentions=True)
    dt = now() - t
    del out
    return dt


def view_keys(page, analysis, layer: int, head: str, bos: str, every_likely: bool = False,
              measure: str = "raw") -> list:
    """Keys of this view at every layer; with `every_likely`, of every view the
    prefetcher draws after this one (attn.views.view_cache.likely_next)."""
    from attn.views.view import View, check_view, parse_head
    from attn.views.view_cache import likely_next

    view = check_view(analysis, View(layer=layer, head=parse_head(head), bos=bos, show_all=False, measure=measure))
    views = [view, *likely_next(analysis, view)] if every_likely else [
        replace(view, layer=i) for i in range(analysis.num_layers)]
    return [page.views._key(analysis, v) for v in views]


def prefetched(page, analysis, layer, head, bos) -> int:
    cache = page.views.cache
    return sum(k in cache for k in view_keys(page, analysis, layer, head, bos))


def settle(page, analysis, layer, head, bos, timeout: float = 60, measure: str = "raw") -> bool:
    """Wait until the background prefetch drew every view it draws after this one (so it
    stops competing for the CPU with the next measurement)."""
    if not page.views.prefetch_enabled:
        return True
    keys = view_keys(page, analysis, layer, head, bos, every_likely=True, measure=measure)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cache = page.views.cache
        if all(k in cache for k in keys):
            time.sleep(0.02)
            return True
        time.sleep(0.02)
    log(f"settle: the prefetch did not draw every likely view in {timeout:.0f} s (layer {layer}, {head}, {bos}, "
        f"{measure}); measuring on")
    return False


def reset_figures(page) -> None:
    from attn.compute.cache import ByteLRU

    figs = page.views
    figs.cache = ByteLRU(figs.cache.max_bytes, size_of=len)


def shown_analysis(analysis):
    """What the page holds in a visitor's session after analysing one prompt."""
    from attn.web.subject import Shown, Subject

    return Shown(Subject(analysis.model, analysis.prompt), analysis=analysis)


def timed_render(page, analysis, layer, head, bos, measure: str = "raw") -> float:
    return timed_view(page, shown_analysis(analysis), 0, layer, head, bos, measure)


def timed_view(page, shown, step: int, layer, head, bos, measure: str = "raw", words: bool = False) -> float:
    """One on_view call, as a control change makes it."""
    t = now()
    out = page.handlers.on_view(shown, step, layer, head, bos, False, measure, words)
    dt = now() - t
    assert "<img" in out.get(page.ui.figure, ""), "on_view gave no figure"
    return dt


def view_switches(page, analysis, reps: int, dwell: float = 3.0, analyze=None) -> dict:
    """on_view timings on an analysis (also put in the engine's cache). With `analyze`, each
    repeat first times a fresh analysis of the same prompt (side by side with its views)
    and caches it in the engine, as the app would."""
    s: dict[str, list] = {k: [] for k in ("analysis_s", "first_view", "layer_cold", "layer_warm", "layer_prefetched",
                                          "idle_control", "head_switch", "bos_switch", "bos_back_cached",
                                          "prefetched_at_dwell", "mode_cold")}
    last_drawn = None  # (layer, head, bos) of the last view a repeat drew
    for rep in range(reps):
        if last_drawn is not None:
            settle(page, analysis, *last_drawn)
        if analyze is not None:
            t = now()
            analysis = analyze()
            s["analysis_s"].append(now() - t)
            page.engine.cache.put((analysis.model, analysis.prompt), analysis)
        l0 = min(PRESET_LAYER, analysis.num_layers - 3)
        l1, l2 = l0 + 1, l0 + 2
        reset_figures(page)
        t_start = now()
        s["first_view"].append(timed_render(page, analysis, l0, MEAN, "gray"))
        s["layer_cold"].append(timed_render(page, analysis, l1, MEAN, "gray"))  # no wait
        time.sleep(max(0.0, dwell - (now() - t_start)))
        s["prefetched_at_dwell"].append(prefetched(page, analysis, l1, MEAN, "gray"))
        s["layer_warm"].append(timed_render(page, analysis, l2, MEAN, "gray"))
        settle(page, analysis, l2, MEAN, "gray")
        # Control: the view on screen again (a cache hit, no drawing) after the same idle.
        # This VM makes the first request after an idle second cost ~3-13 ms, whatever it does.
        time.sleep(dwell)
        s["idle_control"].append(timed_render(page, analysis, l2, MEAN, "gray"))
        settle(page, analysis, l2, MEAN, "gray")
        s["layer_prefetched"].append(timed_render(page, analysis, l0, MEAN, "gray"))  # awake: right after
        settle(page, analysis, l0, MEAN, "gray")
        timed_render(page, analysis, l2, MEAN, "gray")
        settle(page, analysis, l2, MEAN, "gray")
        s["head_switch"].append(timed_render(page, analysis, l2, MAX, "gray"))
        settle(page, analysis, l2, MAX, "gray")
        s["bos_switch"].append(timed_render(page, analysis, l2, MAX, "hide"))
        settle(page, analysis, l2, MAX, "hide")
        s["bos_back_cached"].append(timed_render(page, analysis, l2, MAX, "gray"))
        settle(page, analysis, l2, MAX, "gray")
        # A head switch before the prefetcher reached it: one full drawing.
        reset_figures(page)
        timed_render(page, analysis, l2, MAX, "hide")
        s["mode_cold"].append(timed_render(page, analysis, l2, "Head 1", "hide"))
        last_drawn = (l2, "Head 1", "hide")
    if last_drawn is not None:
        settle(page, analysis, *last_drawn)
    return s


def view_components(analysis, reps: int = 3) -> dict:
    """Where on_view's time goes, piece by piece (no cache)."""
    from attn.views.diagram import line_diagram
    from attn.views.drawing import to_svg
    from attn.views.heatmap import heatmap_html
    from attn.views.highlight import token_html
    from attn.views.view import View

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
        heatmap_html(analysis, view)
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


def import_app(rep: Report, ctx: dict) -> None:
    for name in APP_ENV_DROP:
        os.environ.pop(name, None)
    t = now()
    import app
    from attn.settings import Settings

    # The Blocks, the engine and the view cache; no analysis store: what is timed here is computed.
    page = app.create_page(replace(Settings.from_env(), store_dir=None))
    t_import = now() - t
    loaded = page.engine.model(BUNDLED)  # the engine's loader is attn.model.loading.load
    rep.raw["inprocess.import_app_s"] = t_import
    rep.raw["inprocess.import_and_load_s"] = now() - t
    ctx["page"], ctx["loaded"] = page, loaded
    ctx["variants"] = artist_variants(loaded.tokenizer)
    import torch

    rep.raw["torch_threads"] = torch.get_num_threads()
