"""The page's first sight: the first preset, drawn into the page's initial values when its
answer is already known (the engine's cache or the analysis store), so a visitor, or a course
page that embeds the demo, sees the lab's figure before any click, any event or any model
load, and no GPU call is made for it.

It is drawn once, when the app is built; every visitor's session starts from it (the
session's `Shown` is the same frozen object, never copied). A deep link replaces it in the
page's load event (Handlers.on_load), drawn from the store in the same way when it holds
the link's answer.
"""

from __future__ import annotations

import logging

from attn.views.summary import summary_html, top_k_html
from attn.views.view import head_choice
from attn.web.layout import ABLATION_HINT, look_for_md, preset_layer
from attn.web.subject import Shown, Subject

log = logging.getLogger(__name__)


def draw_first_preset(page, examples: list[dict]) -> bool:
    """Set the page's initial values to the first preset's analysis when the engine knows it
    without its model; True when drawn. Call before the page is launched."""
    ui, handlers, engine = page.ui, page.handlers, page.engine
    preset, model = examples[0], ui.model.value
    prompt = preset["prompt"]
    if not engine.has_answer(prompt, model):
        return False
    analysis = engine.analyze(prompt, model)  # from the cache, where has_answer put it
    shown = Shown(Subject(model, prompt), analysis=analysis)
    layer = preset_layer(preset, model)
    values = {ui.shown: shown, ui.prompt: prompt, ui.layer: layer, ui.summary: summary_html(analysis),
              ui.topk: top_k_html(analysis), ui.look_for: look_for_md(examples, prompt)}
    views = handlers.on_view(shown, 0, layer, ui.head.value, ui.bos.value, ui.show_all.value, ui.measure.value,
                             ui.by_words.value)
    if not isinstance(views, dict) or ui.figure not in views:
        log.warning("The first preset could not be drawn: %s", views)
        return False
    for component, value in (values | views).items():
        component.value = value if component is ui.shown else component.postprocess(value)
    return True


def link_view(handlers, link) -> dict:
    """For Handlers.on_load: the page's first sight replaced in the same event that sets the
    link's controls, by the link's view, drawn when its answer is known without the model (the
    cache or the store); else cleared, never shown beside the link's prompt while the model
    loads. Only the load event's own outputs (ui.link_outputs)."""
    ui, c = handlers.ui, link.continuation
    if not link.prompt:
        return {}
    n, t, seed = (1, 0.0, 0) if c is None else (c.max_new_tokens, c.temperature, c.seed or 0)
    if handlers.engine.has_answer(link.prompt, link.model, compare=link.compare, max_new_tokens=n, temperature=t,
                                  seed=seed):
        view, head = link.view, head_choice(link.view.head)
        drawn = handlers.on_analyze(link.prompt, link.model, view.layer, head, None, bool(link.compare), link.compare,
                                    n, t, seed, link.step, progress=lambda *args, **kwargs: None)
        if drawn.get(ui.shown) is not None:
            step = drawn[ui.step].get("value", 0) if isinstance(drawn[ui.step], dict) else 0
            views = handlers.on_view(drawn[ui.shown], step, view.layer, head, view.bos, view.show_all, view.measure,
                                     link.words)
            outputs = set(ui.link_outputs)  # the analysis sets a few more (the refusal's offer)
            return {c: v for c, v in (drawn | views).items() if c in outputs} | {ui.autorun: False}
    waiting = '<div class="attn-hint">Analyzing this prompt: the prediction appears here.</div>'
    return {ui.shown: None, ui.summary: waiting, ui.topk: "", ui.figure: "", ui.tokens_view: "", ui.overview: "",
            ui.layer_info: "", ui.look_for: "", ui.ablation: ABLATION_HINT}
