"""Attention explorer: which prompt tokens did the model look at to predict the next one?

`python app.py` serves the demo (port from GRADIO_SERVER_PORT, default 7860). One forward
pass per prompt is cached by the engine; every control re-renders from that cache.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from html import escape
from pathlib import Path

from attn import BUNDLED, REGISTRY, AttnError, Engine, PromptError
from attn.model import bundled
from attn.settings import Settings
from attn.views import words

SETTINGS = Settings.from_env()
ON_ZEROGPU = SETTINGS.zero_gpu
DEFAULT_MODEL = SETTINGS.default_model
MODEL_NAMES = list(SETTINGS.models)

# An empty cache (the first start; every restart of a Space without a volume) means a
# one-time conversion of the bundled model: it starts now, in a process of its own, so it
# runs on the other core while gradio imports instead of after the server is up.
if DEFAULT_MODEL == BUNDLED or (ON_ZEROGPU and BUNDLED in MODEL_NAMES):  # the models loaded at start
    CONVERTER = bundled.convert_in_background(SETTINGS.cache_dir)

import gradio as gr  # noqa: E402
import spaces  # noqa: E402

from attn.views.ablation_bars import ablation_html  # noqa: E402
from attn.compute.compare import align  # noqa: E402
from attn.views.compare_diagram import compare_html, compare_svg  # noqa: E402
from attn.views.compare_difference import cross_html, difference_html  # noqa: E402
from attn.views.export import write_all  # noqa: E402
from attn.views.diagram import line_diagram_html  # noqa: E402
from attn.views.highlight import token_html  # noqa: E402
from attn.web.link import read_link, share_query  # noqa: E402
from attn.views.summary import generation_html, layer_info_md, model_status_md, note_html, summary_html, top_k_html  # noqa: E402
from attn.views.view import (BOS_MODE_HELP, HEAD_CHOICES_BASE, View, check_view, fit_controls, head_choice,  # noqa: E402
                       head_choices, parse_head, view_json)
from attn.views.view_cache import ViewCache  # noqa: E402

log = logging.getLogger("app")
HERE = Path(__file__).parent
EXAMPLES = json.loads((HERE / "examples.json").read_text(encoding="utf-8"))

# Every model call goes through spaces.GPU (a no-op off ZeroGPU). 10 s: the worst call
# measured by bench/gpu.py (Gemma 3 1B shapes, bf16, 2048 tokens, weights copied in) took
# 0.7 s on an H200; a short duration queues sooner on ZeroGPU.
GPU = spaces.GPU(duration=SETTINGS.gpu_seconds)
ENGINE = Engine.for_settings(SETTINGS, accelerator=GPU)
VIEWS = ViewCache(SETTINGS.figure_cache_bytes, prefetch=SETTINGS.prefetch)
if ON_ZEROGPU:
    # ZeroGPU wants weights placed on cuda at import time, in the main process.
    for _name in MODEL_NAMES:
        try:
            ENGINE.model(_name)
        except AttnError as exc:
            log.error("%s", exc)

EXPORT_ROOT = Path(tempfile.gettempdir()) / "attn-export"
EXPORT_KEEP_SECONDS = 600  # Gradio copies a download into its own cache when it is returned
BOS_CHOICES = [(f"{k}: {v}", k) for k, v in BOS_MODE_HELP.items()]
MEASURE_CHOICES = [("Attention weights", "raw"), ("Value-weighted", "value"), ("Rollout", "rollout")]
ONE_PROMPT_HINT = ('<div class="attn-hint">Removing tokens checks one typed prompt, token by token: it '
                   "works without Compare, Continue (N = 1) or Words.</div>")
ABLATION_HINT = ('<div class="attn-hint">Does the attention explain the prediction? <b>Check by removing '
                 "tokens</b> runs the model once more per token (batched) and shows what each one was worth.</div>")


# ---- helpers ---------------------------------------------------------------------------
def model_choices() -> list[tuple[str, str]]:
    return [(REGISTRY[n].label, n) for n in MODEL_NAMES]


def model_status(name: str) -> str:
    try:
        state, detail = ENGINE.status(name)
    except AttnError as exc:  # a name from a crafted request: say so, as plain text
        return escape(str(exc))
    return model_status_md(REGISTRY[name], state, detail)


def preset_layer(preset: dict, model: str) -> int:
    return int(preset.get("layer", {}).get(model, REGISTRY[model].default_layer))


def wait_for_model(name: str, progress: gr.Progress) -> None:
    """Show load progress (the bundled model's first-ever start converts for ~1 min)."""
    while True:
        state, detail = ENGINE.status(name)
        if state in ("ready", "error"):
            return
        if state == "not loaded":
            ENGINE.preload(name)
        progress(None, desc=f"{REGISTRY[name].label}: {detail or 'loading'}")
        time.sleep(0.3)


def ready(prompt: str, model: str, progress: gr.Progress | None) -> None:
    """Show a model load's progress on the page while a request waits for it. A blank
    prompt needs no model: it is refused at once by the engine, not after a load."""
    if progress is not None and isinstance(prompt, str) and prompt.strip() and not ENGINE.is_ready(model):
        wait_for_model(model, progress)


def analyze(prompt: str, model: str, progress: gr.Progress | None = None):
    """ENGINE.analyze, showing a model load's progress on the page while it waits."""
    ready(prompt, model, progress)
    return ENGINE.analyze(prompt, model)


# ---- event handlers --------------------------------------------------------------------
# No handler raises gr.Error: a failed event marks every output with an "Error" badge, which
# hides the controls and the last good analysis. A refused request skips its outputs instead
# and says why in the line under the prompt (and in a toast, from queued events).
# `key` names what was analysed: {"model", "prompt", "compare": prompt B or "",
# "generate": [tokens, temperature, seed] or None}; the views read it from the caches only.
def shown(key: dict, step, by_words: bool) -> tuple:
    """(analysis, comparison or None, generation or None) for the views, from the caches
    (never the model). A comparison's analysis is prompt A's. Raises AttnError."""
    gone = PromptError("This analysis has left the shared cache; press Analyze to run it again.")
    comparison = generation = None
    if key.get("compare"):
        comparison = ENGINE.cached_comparison(key["prompt"], key["compare"], key["model"])
        if comparison is None:
            raise gone
        analysis = comparison.a
    elif key.get("generate"):
        generation = ENGINE.cached_generation(key["prompt"], key["model"], *key["generate"])
        if generation is None:
            raise gone
        analysis = generation.step_analysis(min(int(step or 0), generation.num_steps - 1))
    else:
        analysis = ENGINE.cached(key["prompt"], key["model"])
        if analysis is None:
            raise gone
    return (words.merged(analysis) if by_words else analysis), comparison, generation


def read_view(analysis, layer, head, bos, show_all, measure) -> View:
    return check_view(analysis, View(layer=int(layer), head=parse_head(head), bos=bos, show_all=bool(show_all),
                                     measure=measure))


def on_view(key: dict | None, step, layer, head, bos, show_all, measure, by_words):
    """Everything that depends on the view; served from the caches (analysis, ablation,
    comparison, continuation).

    The last output is the note under the prompt: set when the view cannot be drawn, left
    alone otherwise (it may be explaining a refused analysis while this redraws the last one)."""
    if not key:
        return (gr.skip(),) * 9
    # Views never run the model: they are served outside the queue, from the cache only
    # (so no toast: gr.Warning reaches the page only from queued events).
    try:
        analysis, comparison, generation = shown(key, step, by_words)
        view = read_view(analysis, layer, head, bos, show_all, measure)
        if comparison is not None:
            return compare_views(comparison, view, by_words) + (share(key, view, step, by_words),) + (gr.skip(),) * 3
    except AttnError as exc:
        return (gr.skip(),) * 8 + (note_html(str(exc)),)
    ablated = None if generation or by_words else ENGINE.cached_ablation(analysis.prompt, analysis.model)
    if generation or by_words:
        hint = ONE_PROMPT_HINT
    else:
        hint = ABLATION_HINT if ablated is None else ablation_html(ablated, analysis, view)
    return (
        line_diagram_html(VIEWS.line_svg(analysis, view), view),
        token_html(analysis, view),
        hint,
        VIEWS.heatmap(analysis, view),
        layer_info_md(analysis, view),
        share(key, view, step, by_words),
        gr.skip() if generation is None else generation_html(generation, int(step or 0)),
        gr.skip() if generation is None else top_k_html(analysis),
        gr.skip(),
    )


def compare_views(comparison, view: View, by_words: bool) -> tuple:
    """The figure, tokens, ablation, overview and layer line of a comparison."""
    a, b, alignment = comparison.a, comparison.b, comparison.alignment
    if by_words:
        a, b = words.merged(a), words.merged(b)
        alignment = align(a.tokens, b.tokens)
    both = lambda draw: "".join(  # noqa: E731
        f'<div class="attn-side" style="font-weight:bold;margin-top:6px">{side}</div>{draw(x)}'
        for side, x in (("A", a), ("B", b)))
    return (
        compare_html(compare_svg(a, b, alignment, view), view) + difference_html(a, b, alignment, view),
        both(lambda x: token_html(x, view)),
        ONE_PROMPT_HINT,
        both(lambda x: VIEWS.heatmap(x, view)),
        layer_info_md(a, view),
    )


def share(key: dict, view: View, step, by_words: bool) -> str:
    return share_query(key["prompt"], key["model"], view, compare=key.get("compare") or "",
                       generate=key.get("generate"), step=int(step or 0), words=bool(by_words))


def on_export(key: dict | None, step, layer, head, bos, show_all, measure, by_words):
    """The view on screen as files: diagram (PNG at 300 dpi, SVG), weights (CSV), analysis
    (JSON); of prompt A in a comparison."""
    if not key:
        gr.Warning("Analyze a prompt first.")
        return gr.skip()
    try:
        analysis, _, _ = shown(key, step, by_words)
        view = read_view(analysis, layer, head, bos, show_all, measure)
    except AttnError as exc:
        gr.Warning(escape(str(exc)))
        return gr.skip()
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    for old in EXPORT_ROOT.iterdir():  # bounded disk on a public Space
        if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    return [str(p) for p in write_all(analysis, view, tempfile.mkdtemp(dir=EXPORT_ROOT))]


def on_ablate(key: dict | None, progress=gr.Progress()):
    """Delete each token in turn (batched forward passes, cached). The views, redrawn after
    it from the caches, show the bars for the controls as they are by then: moving them
    meanwhile is never blocked and never lost."""
    if not key or key.get("compare") or key.get("generate"):
        gr.Warning("Analyze one prompt first (without Compare or Continue).")
        return gr.skip()

    def step(done: int, total: int) -> None:
        progress((done, total), desc="Removing tokens one at a time", unit="tokens")

    try:
        ENGINE.ablate(key["prompt"], key["model"], progress=step)
    except AttnError as exc:
        gr.Warning(escape(str(exc)))
    return gr.skip()


def refuse(exc: AttnError, model: str, shown_key: dict | None) -> tuple:
    """A refused analysis: a toast and the note say why; everything else stays as it was,
    so the last good analysis and the controls stay usable."""
    gr.Warning(escape(str(exc)))  # toasts render HTML: show "<BOS>" as text
    note = str(exc) + (" The views below still show the last analysis." if shown_key else "")
    return (gr.skip(),) * 5 + (model_status(model), note_html(note), gr.skip())


def on_analyze(prompt: str, model: str, layer, head, shown_key: dict | None = None, compare_on=False,
               prompt_b: str = "", n_new=1, temperature=0.0, seed=0, step=0, progress=gr.Progress()):
    """Analyze (one forward pass, cached), compare two prompts, or continue the prompt;
    then size the controls to the model."""
    key = {"model": model, "prompt": prompt, "compare": "", "generate": None}
    step_control = gr.update(visible=False)
    try:
        if compare_on:
            ready(prompt, model, progress)
            comparison = ENGINE.compare(prompt, prompt_b, model)
            key["compare"], analysis = prompt_b, comparison.a
            summary = cross_html(comparison.a, comparison.b, comparison.p_b_of_a_next, comparison.p_a_of_b_next)
        elif int(n_new) > 1 or float(temperature) > 0:
            ready(prompt, model, progress)
            progress(None, desc=f"Generating up to {int(n_new)} tokens")
            generation = ENGINE.generate(prompt, model, n_new, temperature, seed)
            key["generate"] = [int(n_new), float(temperature), int(seed)]
            step = min(max(int(step or 0), 0), generation.num_steps - 1)
            analysis, summary = generation.step_analysis(step), generation_html(generation, step)
            step_control = gr.update(maximum=max(generation.num_steps - 1, 1), value=step,
                                     visible=generation.num_steps > 1)
        else:
            analysis = analyze(prompt, model, progress)
            summary = summary_html(analysis)
    except AttnError as exc:
        return refuse(exc, model, shown_key)
    topk = top_k_html(analysis)
    layer, head = fit_controls(analysis, layer, head)
    return (
        key,
        summary,
        topk,
        gr.update(maximum=analysis.num_layers - 1, value=layer),
        gr.update(choices=head_choices(analysis.num_heads), value=head_choice(head)),
        model_status(model),
        "",
        step_control,
    )


def on_load(request: gr.Request):
    """Deep links (attn/link.py): ?prompt=...&model=...&layer=...&head=...&bos=...&all=1
    &measure=value&words=1, and &compare=... or &continue=N&temperature=T&seed=S&step=K.

    Without a link the page is already built with these defaults: the controls are left
    alone (a slider moved while this event waits is not reset) and only the status is fresh."""
    query = dict(request.query_params) if request is not None else {}
    if not query:
        return (gr.skip(),) * 16 + (model_status(DEFAULT_MODEL),)
    link = read_link(query, specs={n: REGISTRY[n] for n in MODEL_NAMES}, default_model=DEFAULT_MODEL,
                     suggested_layer=lambda model: preset_layer(EXAMPLES[0], model))
    for note in link.notes:
        gr.Warning(escape(note))
    spec, view = REGISTRY[link.model], link.view
    n_new, temperature, seed = link.generate
    return (
        link.prompt or EXAMPLES[0]["prompt"],
        gr.update(value=link.model),
        gr.update(maximum=spec.num_layers - 1, value=view.layer),
        gr.update(choices=head_choices(spec.num_heads), value=head_choice(view.head)),
        view.bos,
        view.show_all,
        view.measure,
        link.words,
        bool(link.compare),
        gr.update(value=link.compare or EXAMPLES[1]["prompt"], visible=bool(link.compare)),
        n_new,
        temperature,
        seed,
        link.step,
        gr.update(open=link.generate != (1, 0.0, 0)),
        bool(link.prompt),
        model_status(link.model),
    )


def on_load_analyze(run: bool, *args, progress=gr.Progress()):
    """After on_load: analyze the link's prompt, when the link had one."""
    if not run:
        return (gr.skip(),) * 8
    return on_analyze(*args, progress=progress)


# ---- API -------------------------------------------------------------------------------
def api(job):
    """An API call: AttnErrors become readable gr.Errors."""
    try:
        return job()
    except AttnError as exc:
        raise gr.Error(str(exc)) from None


def api_analyze(prompt: str, model: str = BUNDLED) -> dict:
    """Analyze a prompt: next token, top-k, and the last position's attention for every
    layer and head (the JSON schema in the README)."""
    return api(lambda: analyze(prompt, model).to_json())


def api_view(prompt: str, model: str = BUNDLED, layer: int = 0, head: str = "mean", bos: str = "gray",
             measure: str = "raw") -> dict:
    """The weights one view shows (served from the cache when the prompt was analyzed)."""
    return api(lambda: view_json(analyze(prompt, model),
                                 View(layer=layer, head=parse_head(head), bos=bos, measure=measure)))


def api_ablate(prompt: str, model: str = BUNDLED) -> dict:
    """Delete each prompt token in turn: the next token's probability without it (README)."""
    return api(lambda: ENGINE.ablate(prompt, model).to_json())


def api_compare(prompt_a: str, prompt_b: str, model: str = BUNDLED) -> dict:
    """Two prompts' analyses, their tokens aligned, and each one's probability of the
    other's next token (README)."""
    return api(lambda: ENGINE.compare(prompt_a, prompt_b, model).to_json())


def api_generate(prompt: str, model: str = BUNDLED, max_new_tokens: int = 8, temperature: float = 0.0,
                 seed: int = 0) -> dict:
    """Continue a prompt (greedy at temperature 0) with every step's attention (README)."""
    return api(lambda: ENGINE.generate(prompt, model, max_new_tokens, temperature, seed).to_json())


def api_stats() -> dict:
    """Counters for monitoring (and for tests): forward passes run, cache use."""
    s = ENGINE.cache_stats()
    return {
        "forward_calls": ENGINE.forward_calls,
        "ablation_calls": ENGINE.ablation_calls,
        "generate_calls": ENGINE.generate_calls,
        "cache": {"hits": s.hits, "misses": s.misses, "entries": s.entries, "bytes": s.bytes, "max_bytes": s.max_bytes},
        "models": {n: ENGINE.status(n)[0] for n in MODEL_NAMES},
    }


# ---- layout ----------------------------------------------------------------------------
CSS = """
.attn-figure img { display: block; }
#preset-row button { flex: 1 1 0; }
.attn-hint { color: var(--body-text-color-subdued); padding: 8px 0; }
.attn-note { color: var(--body-text-color); background: var(--color-accent-soft);
             border-left: 3px solid var(--color-accent); padding: 4px 8px; font-size: 14px; }
"""

COPY_JS = """
(query) => {
  const url = window.location.origin + window.location.pathname + query;
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {}
  return url;
}
"""


def build() -> gr.Blocks:
    default_spec = REGISTRY[DEFAULT_MODEL]
    # Downloads are copied into Gradio's cache: every 30 min, drop those older than an hour.
    with gr.Blocks(title="Attention explorer", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# What does the model look at?\n"
            "Type a prompt (or pick a preset). The model predicts the **next token**; the views show, "
            "layer by layer and head by head, how much attention that prediction paid to each prompt "
            "token. Thicker lines and darker shading mean more attention. Moving the controls re-draws "
            "from one cached forward pass: it never runs the model again."
        )
        key = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(EXAMPLES[0]["prompt"], label="Prompt", lines=3, max_lines=12,
                                    elem_id="prompt", placeholder="Jide was hungry so she went looking for")
                note = gr.HTML(elem_id="prompt-note")
                with gr.Row(elem_id="preset-row"):
                    preset_buttons = [gr.Button(p["name"], size="sm", elem_id=f"preset-{i}")
                                      for i, p in enumerate(EXAMPLES)]
                look_for = gr.Markdown("", elem_id="look-for")
                with gr.Row():
                    compare_on = gr.Checkbox(label="Compare with a second prompt (B)", value=False,
                                             elem_id="compare-on", scale=1)
                    prompt_b = gr.Textbox(EXAMPLES[1]["prompt"], label="Prompt B", lines=1, max_lines=6,
                                          elem_id="prompt-b", visible=False, scale=3)
                with gr.Accordion("Continue the prompt: generate, then step through", open=False,
                                  elem_id="continue") as continue_box:
                    with gr.Row():
                        n_new = gr.Slider(1, 32, step=1, value=1, label="Continue for N tokens (1 = the lab)",
                                          elem_id="n-new", scale=2)
                        temperature = gr.Slider(0, 2, step=0.1, value=0, label="Temperature (0 = greedy)",
                                                elem_id="temperature", scale=2)
                        seed = gr.Number(0, label="Seed (sampling)", precision=0, minimum=0, elem_id="seed", scale=1)
            with gr.Column(scale=2):
                model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model", elem_id="model")
                status = gr.Markdown(model_status(DEFAULT_MODEL), elem_id="model-status")
                analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
        with gr.Row():
            with gr.Column(scale=3):
                # Room for the progress of a model load or an analysis, before the first result.
                summary = gr.HTML('<div class="attn-hint">Press Analyze or pick a preset: the prediction '
                                  "appears here.</div>", elem_id="continuation", min_height=64)
            with gr.Column(scale=2):
                topk = gr.HTML(elem_id="topk")
        with gr.Row():
            layer = gr.Slider(0, default_spec.num_layers - 1, step=1, value=preset_layer(EXAMPLES[0], DEFAULT_MODEL),
                              label="Layer", elem_id="layer", scale=3)
            head = gr.Dropdown(head_choices(default_spec.num_heads), value=HEAD_CHOICES_BASE[0],
                               label="Head (default: mean over heads)", elem_id="head", scale=1)
            bos = gr.Radio(BOS_CHOICES, value="gray", label="<BOS> (attention sink)", elem_id="bos", scale=2)
            show_all = gr.Checkbox(label="Show all weights (every position, as in the lab)", value=False,
                                   elem_id="show-all", scale=1)
        measure = gr.Radio(MEASURE_CHOICES, value="raw", label="Measure", elem_id="measure",
                           info="Raw weights (the lab); weighted by how far each value moves the output "
                                "(Kobayashi et al. 2020); or traced through every layer (Abnar & Zuidema 2020)")
        with gr.Row():
            by_words = gr.Checkbox(label="Words, not pieces (attention summed per word)", value=False,
                                   elem_id="words", scale=1)
            step = gr.Slider(0, 31, step=1, value=0, label="Step: the generated token whose prediction is shown",
                             elem_id="step", visible=False, scale=3)
        layer_info = gr.Markdown(elem_id="layer-info")
        figure = gr.HTML(elem_id="figure")
        tokens_view = gr.HTML(elem_id="tokens")
        ablate_btn = gr.Button("Check by removing tokens", size="sm", elem_id="ablate")
        ablation = gr.HTML(ABLATION_HINT, elem_id="ablation")
        with gr.Accordion("All layers at once", open=True):
            overview = gr.HTML(elem_id="overview")
        with gr.Row():
            link_query = gr.Textbox(visible=False)
            copy_btn = gr.Button("Copy link to this view", size="sm", elem_id="copy-link", scale=1)
            link = gr.Textbox(label="Link", interactive=False, elem_id="link", scale=4, buttons=["copy"])
        with gr.Row():
            export_btn = gr.Button("Download this view (PNG, SVG, CSV, JSON)", size="sm", elem_id="export", scale=1)
            exported = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="export-files",
                               scale=4, height=140)
        autorun = gr.State(False)

        view_inputs = [key, step, layer, head, bos, show_all, measure, by_words]
        view_outputs = [figure, tokens_view, ablation, overview, layer_info, link_query, summary, topk, note]
        analysis_inputs = [prompt, model, layer, head, key, compare_on, prompt_b, n_new, temperature, seed, step]
        analysis_outputs = [key, summary, topk, layer, head, status, note, step]
        # Progress shows where the result will appear, never over the controls (which are
        # outputs only to be sized to the model) nor over the status.
        analyzing = dict(api_visibility="private", concurrency_limit=2, show_progress_on=[summary, figure])
        quiet = dict(api_visibility="private", queue=False, show_progress="hidden")

        def then_view(event):
            return event.then(on_view, view_inputs, view_outputs, **quiet)

        then_view(gr.on([analyze_btn.click, prompt.submit], on_analyze, analysis_inputs, analysis_outputs, **analyzing))
        for i, button in enumerate(preset_buttons):
            def fill(model_name, _i=i):
                p = EXAMPLES[_i]
                return p["prompt"], preset_layer(p, model_name), f"**What to look for:** {p['look_for']}"

            then_view(
                button.click(fill, [model], [prompt, layer, look_for], **quiet)
                .then(on_analyze, analysis_inputs, analysis_outputs, **analyzing)
            )
        gr.on([layer.change, head.change, bos.change, show_all.change, measure.change, by_words.change,
               step.change], on_view, view_inputs, view_outputs, **quiet)
        compare_on.change(lambda on: gr.update(visible=on), [compare_on], [prompt_b], **quiet)
        then_view(ablate_btn.click(on_ablate, [key], [ablation], api_visibility="private", concurrency_limit=1,
                                   show_progress_on=[ablation]))
        model.change(model_status, [model], [status], **quiet)
        export_btn.click(on_export, view_inputs, [exported], api_visibility="private", concurrency_limit=2,
                         show_progress_on=[exported])
        copy_btn.click(None, [link_query], [link], js=COPY_JS, api_visibility="private")

        # Queued: gr.Warning (the deep-link notes) only reaches the page from a queued event.
        # No progress: the page is usable while this waits (behind a model load, say).
        load = demo.load(on_load, None, [prompt, model, layer, head, bos, show_all, measure, by_words, compare_on,
                                          prompt_b, n_new, temperature, seed, step, continue_box, autorun, status],
                         api_visibility="private", show_progress="hidden")
        then_view(load.then(on_load_analyze, [autorun, *analysis_inputs], analysis_outputs, **analyzing))

        gr.api(api_analyze, api_name="analyze", concurrency_limit=2)
        gr.api(api_view, api_name="view", concurrency_limit=4)
        gr.api(api_ablate, api_name="ablate", concurrency_limit=1)
        gr.api(api_compare, api_name="compare", concurrency_limit=2)
        gr.api(api_generate, api_name="generate", concurrency_limit=1)
        gr.api(api_stats, api_name="stats", queue=False)
    return demo


demo = build()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    demo.queue(max_size=SETTINGS.queue_size, default_concurrency_limit=2)
    demo.launch(share=False, css=CSS, ssr_mode=False, footer_links=["api"], prevent_thread_lock=True)
    if not ON_ZEROGPU:
        ENGINE.preload(DEFAULT_MODEL)  # after the server answers: start-up is not held up by it
    demo.block_thread()
