"""The page's event handlers. Each returns a dict {component: new value} for the components
it changes (Gradio's documented way): a component left out keeps its value.

No handler raises gr.Error: a failed event marks every output with an "Error" badge, which
hides the controls and the last good analysis. A refused request changes nothing but the
note under the prompt and the model status, and says why in a toast (gr.Warning reaches
the page only from queued events).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from html import escape
from pathlib import Path

import gradio as gr

from attn.compute.compare import align
from attn.compute.engine import Engine
from attn.errors import AttnError, GpuRefusedError
from attn.model.registry import REGISTRY
from attn.settings import Settings
from attn.views import words
from attn.views.ablation_bars import ablation_html
from attn.views.compare_diagram import compare_html, compare_svg
from attn.views.compare_difference import cross_html, difference_html
from attn.views.describe import compare_alt, diagram_alt
from attn.views.diagram import line_diagram_html
from attn.views.export import write_all
from attn.views.highlight import token_html
from attn.views.profile_grid import profile_grid_html
from attn.views.sentence_strip import sentence_strip_html
from attn.views.summary import generation_html, layer_info_md, model_status_md, note_html, summary_html, top_k_html
from attn.views.tables import compare_table, overview_table, view_table
from attn.views.view import View, check_view, fit_controls, head_choice, head_choices, parse_head
from attn.views.view_cache import ViewCache
from attn.web.embed import full_explorer_at_load
from attn.web.first import link_view
from attn.web.layout import ABLATION_HINT, ONE_PROMPT_HINT, Ui, look_for_md, preset_layer
from attn.web.link import read_link
from attn.web.refusal import refusal_notice, smaller_model
from attn.web.subject import Shown, Subject

EXPORT_ROOT = Path(tempfile.gettempdir()) / "attn-export"
EXPORT_KEEP_SECONDS = 600  # Gradio copies a download into its own cache when it is returned


def model_status(engine: Engine, name: str) -> str:
    try:
        state, detail = engine.status(name)
    except AttnError as exc:  # a name from a crafted request: say so, as plain text
        return escape(str(exc))
    return model_status_md(REGISTRY[name], state, detail)


def compared(comparison, by_words: bool) -> tuple:
    """(a, b, alignment) of a comparison as the views draw it: summed per word with `by_words`."""
    a, b, alignment = comparison.a, comparison.b, comparison.alignment
    if by_words:
        a, b = words.merged(a), words.merged(b)
        alignment = align(a.tokens, b.tokens)
    return a, b, alignment


def read_view(analysis, layer, head, bos, show_all, measure) -> View:
    return check_view(analysis, View(layer=int(layer), head=parse_head(head), bos=bos, show_all=bool(show_all),
                                     measure=measure))


class Handlers:
    """The page's events, bound to its components (`ui`), the engine and the view cache."""

    def __init__(self, ui: Ui, engine: Engine, views: ViewCache, settings: Settings, examples: list[dict]):
        self.ui, self.engine, self.views, self.settings, self.examples = ui, engine, views, settings, examples

    def model_status(self, name: str) -> str:
        return model_status(self.engine, name)

    # ---- the model, while a request waits for it ------------------------------------------
    def _wait_for_model(self, name: str, progress: gr.Progress) -> None:
        """Show load progress (the bundled model's first-ever start converts for ~1 min)."""
        if self.engine.status(name)[0] in ("not loaded", "loading"):
            self.engine.preload(name)  # now, also when app.main scheduled it for a moment later
        while True:
            state, detail = self.engine.status(name)
            if state in ("ready", "error"):
                return
            progress(None, desc=f"{REGISTRY[name].label}: {detail or 'loading'}")
            time.sleep(0.3)

    def _ready(self, prompt: str, model: str, progress: gr.Progress | None) -> None:
        """Show a model load's progress on the page while a request waits for it. A blank
        prompt needs no model: it is refused at once by the engine, not after a load."""
        if progress is not None and isinstance(prompt, str) and prompt.strip() and not self.engine.is_ready(model):
            self._wait_for_model(model, progress)

    # ---- analyze, compare, continue ------------------------------------------------------
    def on_analyze(self, prompt: str, model: str, layer, head, shown: Shown | None = None, compare_on=False,
                   prompt_b: str = "", n_new=1, temperature=0.0, seed=0, step=0, progress=gr.Progress()) -> dict:
        """Analyze (one forward pass, cached), compare two prompts, or continue the prompt;
        then size the controls to the model."""
        ui, engine = self.ui, self.engine
        step_control = gr.update(visible=False)
        try:
            if not engine.has_answer(prompt, model, compare=prompt_b if compare_on else "", max_new_tokens=n_new,
                                     temperature=temperature, seed=seed):  # a stored answer needs no model
                self._ready(prompt, model, progress)
            if compare_on:
                comparison = engine.compare(prompt, prompt_b, model)
                held = Shown(Subject(model, prompt, compare=prompt_b), comparison=comparison)
                analysis = comparison.a
                summary = cross_html(comparison.a, comparison.b, comparison.p_b_of_a_next, comparison.p_a_of_b_next)
            elif int(n_new) > 1 or float(temperature) > 0:
                progress(None, desc=f"Generating up to {int(n_new)} tokens")
                generation = engine.generate(prompt, model, n_new, temperature, seed)
                held = Shown(Subject(model, prompt, continuation=generation.continuation), generation=generation)
                step = min(max(int(step or 0), 0), generation.num_steps - 1)
                analysis, summary = generation.step_analysis(step), generation_html(generation, step)
                step_control = gr.update(maximum=max(generation.num_steps - 1, 1), value=step,
                                         visible=generation.num_steps > 1)
            else:
                analysis = engine.analyze(prompt, model)
                held = Shown(Subject(model, prompt), analysis=analysis)
                summary = summary_html(analysis)
        except AttnError as exc:
            return self._refuse(exc, model, shown)
        layer, head = fit_controls(analysis, layer, head)
        return {
            ui.shown: held,
            ui.summary: summary,
            ui.topk: top_k_html(analysis),
            ui.layer: gr.update(maximum=analysis.num_layers - 1, value=layer),
            ui.head: gr.update(choices=head_choices(analysis.num_heads), value=head_choice(head)),
            ui.status: self.model_status(model),
            ui.note: "",
            ui.step: step_control,
            ui.smaller: gr.update(visible=False),
            ui.look_for: look_for_md(self.examples, prompt),
        }

    def _refuse(self, exc: AttnError, model: str, shown: Shown | None) -> dict:
        """A refused analysis: a toast and the note say why; everything else stays as it was,
        so the last good analysis and the controls stay usable."""
        gr.Warning(escape(str(exc)))  # toasts render HTML: show "<BOS>" as text
        if isinstance(exc, GpuRefusedError):
            return self._gpu_refused(exc, model, shown) | {self.ui.status: self.model_status(model)}
        note = str(exc) + (" The views below still show the last analysis." if shown else "")
        return {self.ui.status: self.model_status(model), self.ui.note: note_html(note)}

    def _gpu_refused(self, exc: GpuRefusedError, model: str, shown) -> dict:
        """ZeroGPU refused: its message, how to get more quota, and the smaller model offered."""
        note, offer = refusal_notice(exc, model, self.settings, shown=shown is not None)
        return {self.ui.note: note, self.ui.smaller: offer}

    def on_smaller(self, model: str) -> dict:
        """The offer's button: the smaller model, chosen for the analysis that follows."""
        smaller = smaller_model(self.settings, model) or model
        return {self.ui.model: gr.update(value=smaller), self.ui.status: self.model_status(smaller)}

    # ---- the views -----------------------------------------------------------------------
    def on_view(self, shown: Shown | None, step, layer, head, bos, show_all, measure, by_words,
                profile: str = "bos") -> dict:
        """Everything that depends on the view, drawn from what this visitor was shown (the
        ablation from the engine's cache, when it holds one); never runs the model.

        Served outside the queue, so a refusal has no toast: it is said in the note under the
        prompt, which is otherwise left alone (it may be explaining a refused analysis while
        this redraws the last one)."""
        ui = self.ui
        if shown is None:
            return gr.skip()
        try:
            analysis = shown.drawn(step, by_words)
            view = read_view(analysis, layer, head, bos, show_all, measure)
            link = {ui.link_query: shown.subject.share(view, step, by_words)}
            if shown.comparison is not None:
                return self._compare_views(shown.comparison, view, by_words, profile) | link
        except AttnError as exc:
            return {ui.note: note_html(str(exc))}
        generation = shown.generation
        if generation is not None or by_words:
            hint = ONE_PROMPT_HINT
        else:
            ablated = self.engine.cached_ablation(analysis.prompt, analysis.model)
            hint = ABLATION_HINT if ablated is None else ablation_html(ablated, analysis, view)
        views = {
            ui.figure: line_diagram_html(self.views.line_svg(analysis, view), view, alt=diagram_alt(analysis, view)),
            ui.tokens_view: token_html(analysis, view),
            ui.ablation: hint,
            ui.overview: self.views.heatmap(analysis, view),
            ui.layer_info: layer_info_md(analysis, view),
            ui.sentence_strip: sentence_strip_html(analysis, view),
            ui.profile_grid: profile_grid_html(analysis, profile, view),
        } | link
        if generation is not None:
            views |= {ui.summary: generation_html(generation, int(step or 0)), ui.topk: top_k_html(analysis)}
        return views

    def _compare_views(self, comparison, view: View, by_words: bool, profile: str = "bos") -> dict:
        """The figure, tokens, ablation, overview and layer line of a comparison."""
        a, b, alignment = compared(comparison, by_words)

        def both(draw) -> str:
            return "".join(f'<div class="attn-side" style="font-weight:bold;margin-top:6px">{side}</div>{draw(x)}'
                           for side, x in (("A", a), ("B", b)))

        ui = self.ui
        return {
            ui.figure: (compare_html(compare_svg(a, b, alignment, view), view, alt=compare_alt(a, b, alignment, view))
                        + difference_html(a, b, alignment, view)),
            ui.tokens_view: both(lambda x: token_html(x, view)),
            ui.ablation: ONE_PROMPT_HINT,
            ui.overview: both(lambda x: self.views.heatmap(x, view)),
            ui.layer_info: layer_info_md(a, view),
            ui.sentence_strip: both(lambda x: sentence_strip_html(x, view)),
            ui.profile_grid: both(lambda x: profile_grid_html(x, profile, view)),
        }

    def on_pick(self, shown: Shown | None, event: gr.EventData) -> dict:
        """A profile-grid cell pressed: its layer and head, in every view (their change events redraw)."""
        data = getattr(event, "_data", None) or {}
        if shown is None or not isinstance(data, dict):
            return gr.skip()
        try:
            analysis = shown.drawn(0, False)
            view = read_view(analysis, data.get("layer"), data.get("head"), "gray", False, "raw")
        except (AttnError, TypeError, ValueError):
            return gr.skip()  # a crafted event: nothing changes
        return {self.ui.layer: view.layer, self.ui.head: head_choice(view.head)}

    def on_tables(self, shown: Shown | None, step, layer, head, bos, show_all, measure, by_words, as_table) -> str:
        """"Show as table": the view on screen as tables (the view, all layers, or the
        comparison), "" while the box is unticked; never runs the model."""
        if shown is None or not as_table:
            return ""
        try:
            analysis = shown.drawn(step, by_words)
            view = read_view(analysis, layer, head, bos, show_all, measure)
        except AttnError:
            return gr.skip()  # on_view says why, in the note under the prompt
        if shown.comparison is not None:
            return compare_table(*compared(shown.comparison, by_words), view)
        return view_table(analysis, view) + overview_table(analysis, view)

    def on_export(self, shown: Shown | None, step, layer, head, bos, show_all, measure, by_words):
        """The view on screen as files: diagram (PNG at 300 dpi, SVG), weights (CSV), analysis
        (JSON); of prompt A in a comparison."""
        if shown is None:
            gr.Warning("Analyze a prompt first.")
            return gr.skip()
        try:
            analysis = shown.drawn(step, by_words)
            view = read_view(analysis, layer, head, bos, show_all, measure)
        except AttnError as exc:
            gr.Warning(escape(str(exc)))
            return gr.skip()
        EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
        for old in EXPORT_ROOT.iterdir():  # bounded disk on a public Space
            if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        files = [str(p) for p in write_all(analysis, view, tempfile.mkdtemp(dir=EXPORT_ROOT))]
        return gr.update(value=files, visible=True)  # the box is hidden while empty (attn/web/layout.py)

    def on_ablate(self, shown: Shown | None, progress=gr.Progress()):
        """Delete each token in turn (batched forward passes, cached). The views, redrawn after
        it, show the bars for the controls as they are by then: moving them meanwhile is never
        blocked and never lost."""
        if shown is None or shown.subject.compare or shown.subject.continuation:
            gr.Warning("Analyze one prompt first (without Compare or Continue).")
            return gr.skip()

        def step(done: int, total: int) -> None:
            progress((done, total), desc="Removing tokens one at a time", unit="tokens")

        try:
            self.engine.ablate(shown.subject.prompt, shown.subject.model, progress=step)
        except GpuRefusedError as exc:
            gr.Warning(escape(str(exc)))
            return self._gpu_refused(exc, shown.subject.model, shown)
        except AttnError as exc:
            gr.Warning(escape(str(exc)))
        return gr.skip()

    # ---- presets and deep links ----------------------------------------------------------
    def preset(self, index: int):
        """The handler of preset button `index`: its prompt, its layer for the model, its hint."""
        def fill(model_name: str) -> dict:
            p = self.examples[index]
            return {self.ui.prompt: p["prompt"], self.ui.layer: preset_layer(p, model_name),
                    self.ui.look_for: look_for_md(self.examples, p["prompt"])}

        return fill

    def on_load(self, request: gr.Request) -> dict:
        """Deep links (attn/web/link.py): ?prompt=...&model=...&layer=...&head=...&bos=...&all=1
        &measure=value&words=1, and &compare=... or &continue=N&temperature=T&seed=S&step=K.

        Without a link the page is already built with these defaults: the controls are left
        alone (a slider moved while this event waits is not reset) and only the status is fresh."""
        return self.open_link(dict(request.query_params) if request is not None else {})

    def open_link(self, query: dict) -> dict:
        """A deep link's query, read into the controls (on_load, and a lesson's steps)."""
        ui, settings = self.ui, self.settings
        if not query:
            return {ui.status: self.model_status(settings.default_model)}
        link = read_link(query, specs={n: REGISTRY[n] for n in settings.models}, default_model=settings.default_model,
                         suggested_layer=lambda model: preset_layer(self.examples[0], model))
        for note in link.notes:
            gr.Warning(escape(note))
        spec, view = REGISTRY[link.model], link.view
        c = link.continuation
        return {
            ui.prompt: link.prompt or self.examples[0]["prompt"],
            ui.model: gr.update(value=link.model),
            ui.layer: gr.update(maximum=spec.num_layers - 1, value=view.layer),
            ui.head: gr.update(choices=head_choices(spec.num_heads), value=head_choice(view.head)),
            ui.bos: view.bos,
            ui.show_all: view.show_all,
            ui.measure: view.measure,
            ui.by_words: link.words,
            ui.compare_on: bool(link.compare),
            ui.prompt_b: gr.update(value=link.compare or self.examples[1]["prompt"], visible=bool(link.compare)),
            ui.n_new: 1 if c is None else c.max_new_tokens,
            ui.temperature: 0.0 if c is None else c.temperature,
            ui.seed: 0 if c is None or c.seed is None else c.seed,
            ui.step: link.step,
            ui.continue_box: gr.update(open=c is not None),
            ui.autorun: bool(link.prompt),
            ui.status: self.model_status(link.model),
        } | link_view(self, link)  # the first sight replaced (attn/web/first.py)

    def on_load_full_explorer(self, request: gr.Request) -> str:
        """The embed mode's link to the whole explorer, as the page's address has it."""
        return full_explorer_at_load(dict(request.query_params) if request is not None else {})

    def on_load_analyze(self, run: bool, *args, progress=gr.Progress()):
        """After `on_load`: analyze the link's prompt, when the link had one."""
        if not run:
            return gr.skip()
        return self.on_analyze(*args, progress=progress)
