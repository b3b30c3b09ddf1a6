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
from attn.web.layout import preset_layer
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
              ui.topk: top_k_html(analysis), ui.look_for: f"**What to look for:** {preset['look_for']}"}
    views = handlers.on_view(shown, 0, layer, ui.head.value, ui.bos.value, ui.show_all.value, ui.measure.value,
                             ui.by_words.value)
    if not isinstance(views, dict) or ui.figure not in views:
        log.warning("The first preset could not be drawn: %s", views)
        return False
    for component, value in (values | views).items():
        component.value = value if component is ui.shown else component.postprocess(value)
    return True
