"""Lesson mode: `?lesson=NAME&step=N` (1-based) walks a learner through a lesson's steps
(attn/web/lesson.py reads them from lessons/NAME.json).

Each step sets up the view through the deep-link machinery (attn/web/link.py: prompt, layer,
head, measure, comparison or continuation), shows its question, and under it "What the
numbers say", computed by the step's reading from what is on screen after every analysis
and every control moved (attn/views/readings.py). Back and Next move between steps; the
link to copy is the step's own. The panel is one self-contained block (`#lesson`) above
the page, so an embedded page (`&embed=1`) can show it as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from html import escape

import gradio as gr

from attn.errors import AttnError
from attn.views.readings import Screen, said_by
from attn.web.handlers import Handlers, read_view
from attn.web.layout import Ui
from attn.web.lesson import LESSONS_DIR, READINGS, Lesson, LessonError, load_lesson, step_query
from attn.web.subject import Shown

log = logging.getLogger(__name__)
LESSON_KEYS = ("lesson", "step")  # the query keys lesson mode reads; the rest is an ordinary deep link


@dataclass(frozen=True)
class Place:
    """Where a visitor is in a lesson (held in their session)."""

    lesson: Lesson
    index: int  # 0-based

    @property
    def step(self):
        return self.lesson.steps[self.index]

    def query(self) -> str:
        return f"?lesson={self.lesson.name}&step={self.index + 1}"


@dataclass(frozen=True)
class LessonUi:
    panel: gr.Column
    header: gr.HTML
    reading: gr.HTML
    back: gr.Button
    next: gr.Button
    place: gr.State  # Place or None: not in a lesson
    ablate_for: gr.Textbox  # hidden: "model\nprompt" a step asks to remove tokens from; its change runs the check

    @property
    def outputs(self) -> list:
        return [self.panel, self.header, self.reading, self.back, self.next, self.place]


def lay_out() -> LessonUi:
    """The lesson panel, hidden until a lesson opens; inside the open gr.Blocks."""
    with gr.Column(visible=False, elem_id="lesson", elem_classes=["attn-lesson"]) as panel:
        header = gr.HTML(elem_id="lesson-step")
        reading = gr.HTML(elem_id="lesson-reading")
        with gr.Row():
            back = gr.Button("Back", size="sm", elem_id="lesson-back", scale=0, min_width=100)
            next_ = gr.Button("Next", size="sm", variant="primary", elem_id="lesson-next", scale=0, min_width=100)
    # A hidden textbox, not a State: its change event fires when an unqueued event sets it.
    ablate_for = gr.Textbox(visible=False)
    return LessonUi(panel, header, reading, back, next_, gr.State(None), ablate_for)


def header_html(place: Place) -> str:
    lesson, step = place.lesson, place.step
    return (
        '<div class="attn-lesson-head" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333">{escape(lesson.title)} · <b class="attn-step-count">Step '
        f"{place.index + 1} of {len(lesson.steps)}</b></div>"
        f'<h2 style="margin:4px 0">{escape(step.title)}</h2>'
        f'<p class="attn-question" style="font-size:15px;margin:4px 0"><b>The lab asks:</b> '
        f"{escape(step.question)}</p></div>"
    )


def error_html(message: str) -> str:
    return (f'<div class="attn-lesson-error" role="alert" style="border-left:3px solid #b3261e;padding:4px 8px;'
            f'color:#8c1d18"><b>This lesson cannot be opened.</b> {escape(message)} The explorer below works as '
            "usual.</div>")


class LessonHandlers:
    """The lesson panel's events, beside the page's own handlers (`on`)."""

    def __init__(self, ui: Ui, lui: LessonUi, on: Handlers, folder=LESSONS_DIR):
        self.ui, self.lui, self.on, self.folder = ui, lui, on, folder

    @property
    def outputs(self) -> list:
        """What opening a step sets: the deep link's controls, the profile choice, the panel."""
        return [*self.ui.link_outputs, self.ui.profile, *self.lui.outputs]

    def on_load(self, request: gr.Request) -> dict:
        """The page opened: a lesson link opens its step; any other link is the page's own."""
        query = dict(request.query_params) if request is not None else {}
        if "lesson" not in query:
            return self.on.open_link(query)
        model = query.get("model") or self.on.settings.default_model
        link = {k: v for k, v in query.items() if k not in LESSON_KEYS}
        try:
            lesson = load_lesson(query["lesson"], self.folder)
        except LessonError as exc:
            gr.Warning(escape(str(exc)))
            return self.on.open_link(link) | {
                self.lui.panel: gr.update(visible=True), self.lui.header: error_html(str(exc)), self.lui.reading: "",
                self.lui.back: gr.update(visible=False), self.lui.next: gr.update(visible=False),
                self.lui.place: None}
        try:
            index = int(query.get("step", 1)) - 1
        except ValueError:
            index = 0
        if not 0 <= index < len(lesson.steps):
            index = min(max(index, 0), len(lesson.steps) - 1)
            gr.Warning(f"This lesson has steps 1-{len(lesson.steps)}; showing step {index + 1}.")
        own = link if "prompt" in link else None  # a copied link: that exact view, inside the step
        return self.open(Place(lesson, index), model, own)

    def move(self, delta: int):
        """The handler of Back (-1) or Next (+1)."""
        def go(place: Place | None, model: str, prompt: str) -> dict:
            if place is None:
                return gr.skip()
            index = min(max(place.index + delta, 0), len(place.lesson.steps) - 1)
            return self.open(Place(place.lesson, index), model, None, prompt)

        return go

    def open(self, place: Place, model: str, link: dict | None, prompt: str = "") -> dict:
        """Set up a step's view (or `link`'s, a copied view of it) and show its panel."""
        setup = place.step.setup
        query = link if link is not None else step_query(setup, model)
        query.setdefault("prompt", prompt or self.on.examples[0]["prompt"])
        out = self.on.open_link(query)
        last = len(place.lesson.steps) - 1
        out |= {
            self.lui.panel: gr.update(visible=True),
            self.lui.header: header_html(place),
            self.lui.reading: ('<div class="attn-hint">What the numbers say appears here once the analysis is '
                               "done.</div>"),
            self.lui.back: gr.update(interactive=place.index > 0, visible=True),
            self.lui.next: gr.update(interactive=place.index < last, visible=True),
            self.lui.place: place,
        }
        if setup.profile is not None:
            out[self.ui.profile] = setup.profile
        return out

    def on_ablate(self, place: Place | None, shown: Shown | None, progress=gr.Progress()):
        """A step that asks for it removes each token of the prompt on screen (`ablate_for`
        changed: the reading asked), as the page's button does (a GPU refusal says so the same way)."""
        if place is None or not place.step.setup.ablate or shown is None or shown.analysis is None:
            return gr.skip()
        return self.on.on_ablate(shown, progress)

    def on_reading(self, place: Place | None, shown: Shown | None, step, layer, head, bos, show_all, measure,
                   by_words) -> dict:
        """What the numbers say, for the view on screen; and the step's link to copy."""
        if place is None or shown is None:
            return gr.skip()
        lui = self.lui
        try:
            analysis = shown.drawn(step, by_words)
            view = read_view(analysis, layer, head, bos, show_all, measure)
            ablation = None
            if shown.analysis is not None and not by_words:
                ablation = self.on.engine.cached_ablation(shown.subject.prompt, shown.subject.model)
            screen = Screen(analysis, view, comparison=shown.comparison, ablation=ablation)
            asks = place.step.setup.ablate and shown.analysis is not None and ablation is None and not by_words
            if asks:  # the step removes the tokens itself (`on_ablate`), then reads the result
                body = ('<p class="attn-hint">Removing each token in turn (the model runs once more per token); '
                        "the numbers follow when it is done.</p>")
            else:
                body = READINGS[place.step.reading](screen) + said_by(analysis)
            link = place.query() + "&" + shown.subject.share(view, step, by_words)[1:]
        except AttnError as exc:
            return {lui.reading: f'<div class="attn-hint">{escape(str(exc))}</div>'}
        except Exception:  # a reading must never break the page
            log.exception("lesson reading %s failed", place.step.reading)
            return {lui.reading: '<div class="attn-hint">These numbers could not be computed for this view.</div>'}
        out = {
            lui.reading: ('<div class="attn-reading" style="font-family:ui-sans-serif,system-ui,sans-serif;'
                          'font-size:15px;line-height:1.5"><h3 style="margin:4px 0">What the numbers say</h3>'
                          f"{body}</div>"),
            self.ui.link_query: link,
        }
        if asks:
            out[lui.ablate_for] = f"{shown.subject.model}\n{shown.subject.prompt}"
        return out


def wire(blocks: gr.Blocks, ui: Ui, lui: LessonUi, on: Handlers, lessons: LessonHandlers, then_view,
         analyzing: dict) -> None:
    """The page's load (a lesson link or any other) and the panel's buttons, each followed by
    the analysis and the views; and the token check a step asks for (its reading sets
    `ablate_for`), followed by the views again."""
    def after_setup(event):
        return then_view(event.then(on.on_load_analyze, [ui.autorun, *ui.analysis_inputs], ui.analysis_outputs,
                                    **analyzing))

    then_view(lui.ablate_for.change(lessons.on_ablate, [lui.place, ui.shown], [ui.ablation, ui.note, ui.smaller],
                                    api_visibility="private", concurrency_limit=1, show_progress_on=[ui.ablation]))

    # Queued: gr.Warning (the deep-link notes) only reaches the page from a queued event.
    # No progress: the page is usable while this waits (behind a model load, say).
    after_setup(blocks.load(lessons.on_load, None, lessons.outputs, api_visibility="private", show_progress="hidden"))
    for button, delta in ((lui.back, -1), (lui.next, 1)):
        after_setup(button.click(lessons.move(delta), [lui.place, ui.model, ui.prompt], lessons.outputs,
                                 api_visibility="private", show_progress="hidden"))


def then_read(event, ui: Ui, lui: LessonUi, lessons: LessonHandlers, quiet: dict):
    """After the views are drawn: the lesson's reading (nothing outside a lesson)."""
    return event.then(lessons.on_reading, [lui.place, *ui.view_inputs], [lui.reading, ui.link_query, lui.ablate_for],
                      **quiet)
