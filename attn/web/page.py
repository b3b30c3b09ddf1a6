"""The page: the Blocks, its events wired to the handlers, and the API.

`build` takes a ready engine and view cache, so a test builds the page around an engine of
its own; app.py's create_app builds them from the Settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from attn.compute.engine import Engine
from attn.settings import Settings
from attn.views.view_cache import ViewCache
from attn.web import embed, lesson_page
from attn.web.api import Api
from attn.web.handlers import Handlers, model_status
from attn.web.layout import COPY_JS, Ui, lay_out
from attn.web.lesson import LESSONS_DIR


@dataclass(frozen=True)
class Page:
    """The built page and what drives it in process (tests, the benchmark)."""

    blocks: gr.Blocks
    ui: Ui
    handlers: Handlers
    api: Api
    engine: Engine
    views: ViewCache
    lesson_ui: lesson_page.LessonUi | None = None  # the lesson panel (?lesson=NAME)
    lessons: lesson_page.LessonHandlers | None = None


def build(settings: Settings, engine: Engine, views: ViewCache, examples: list[dict],
          lessons_dir=LESSONS_DIR) -> Page:
    # Downloads are copied into Gradio's cache: every 30 min, drop those older than an hour.
    with gr.Blocks(title="Attention explorer", delete_cache=(1800, 3600)) as blocks:
        lesson_ui = lesson_page.lay_out()  # hidden until ?lesson=NAME opens a lesson
        ui = lay_out(settings, examples, status=model_status(engine, settings.default_model))
        handlers = Handlers(ui, engine, views, settings, examples)
        lessons = lesson_page.LessonHandlers(ui, lesson_ui, handlers, lessons_dir)
        wire(blocks, ui, handlers, lesson_ui, lessons)
        api = Api(engine, settings)
        api.register()
    blocks.queue(max_size=settings.queue_size, default_concurrency_limit=2)  # more waiting are refused
    return Page(blocks=blocks, ui=ui, handlers=handlers, api=api, engine=engine, views=views, lesson_ui=lesson_ui,
                lessons=lessons)


def wire(blocks: gr.Blocks, ui: Ui, on: Handlers, lesson_ui: lesson_page.LessonUi,
         lessons: lesson_page.LessonHandlers) -> None:
    """The events, inside the open gr.Blocks."""
    # Progress shows where the result will appear, never over the controls (which are
    # outputs only to be sized to the model) nor over the status.
    analyzing = dict(api_visibility="private", concurrency_limit=2, show_progress_on=[ui.summary, ui.figure])
    quiet = dict(api_visibility="private", queue=False, show_progress="hidden")

    view_inputs = [*ui.view_inputs, ui.profile]  # the view, and the profile the grid shows

    def then_view(event):  # then, in a lesson, what the numbers say
        return lesson_page.then_read(event.then(on.on_view, view_inputs, ui.view_outputs, **quiet),
                                     ui, lesson_ui, lessons, quiet)

    then_view(gr.on([ui.analyze_btn.click, ui.prompt.submit], on.on_analyze, ui.analysis_inputs, ui.analysis_outputs,
                    **analyzing))
    for i, button in enumerate(ui.preset_buttons):
        then_view(
            button.click(on.preset(i), [ui.model], [ui.prompt, ui.layer, ui.look_for], **quiet)
            .then(on.on_analyze, ui.analysis_inputs, ui.analysis_outputs, **analyzing)
        )
    controls = gr.on([ui.layer.change, ui.head.change, ui.bos.change, ui.show_all.change, ui.measure.change,
                      ui.by_words.change, ui.step.change, ui.profile.change], on.on_view, view_inputs, ui.view_outputs,
                     **quiet)
    lesson_page.then_read(controls, ui, lesson_ui, lessons, quiet)
    ui.profile_grid.click(on.on_pick, [ui.shown], [ui.layer, ui.head], **quiet)
    ui.compare_on.change(lambda checked: gr.update(visible=checked), [ui.compare_on], [ui.prompt_b], **quiet)
    then_view(ui.ablate_btn.click(on.on_ablate, [ui.shown], [ui.ablation, ui.note, ui.smaller],
                                  api_visibility="private", concurrency_limit=1, show_progress_on=[ui.ablation]))
    # After a GPU refusal: the smaller model, chosen by the visitor, then the same prompt on it.
    then_view(ui.smaller.click(on.on_smaller, [ui.model], [ui.model, ui.status], **quiet)
              .then(on.on_analyze, ui.analysis_inputs, ui.analysis_outputs, **analyzing))
    ui.model.change(on.model_status, [ui.model], [ui.status], **quiet)
    ui.export_btn.click(on.on_export, ui.view_inputs, [ui.exported], api_visibility="private", concurrency_limit=2,
                        show_progress_on=[ui.exported])
    ui.copy_btn.click(None, [ui.link_query], [ui.link], js=COPY_JS, api_visibility="private")

    # "Show as table" and the embed mode's link follow the view: link_query changes with it.
    gr.on([ui.as_table.change, ui.link_query.change], on.on_tables, [*ui.view_inputs, ui.as_table], [ui.tables],
          **quiet)
    ui.link_query.change(embed.full_explorer_html, [ui.link_query], [ui.open_full], **quiet)
    blocks.load(on.on_load_full_explorer, None, [ui.open_full], **quiet)

    # The page's load (a deep link, or a lesson's step) and the lesson's Back and Next.
    lesson_page.wire(blocks, ui, lesson_ui, on, lessons, then_view, analyzing)
