"""Attention explorer: which prompt tokens did the model look at to predict the next one?

`python app.py` serves the demo (port from GRADIO_SERVER_PORT, default 7860). One forward
pass per prompt is cached by the engine; every control re-renders from that cache.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from html import escape
from pathlib import Path
from urllib.parse import urlencode

import gradio as gr
import spaces

from attn import BUNDLED, REGISTRY, AttnError, Engine, View
from attn.errors import echo
from attn.render import FigureCache
from attn.highlight import continuation_html, token_html, top_k_html
from attn.labels import head_label
from attn.weights import BOS_MODE_HELP, check_view, parse_head, row

log = logging.getLogger("app")
HERE = Path(__file__).parent
EXAMPLES = json.loads((HERE / "examples.json").read_text(encoding="utf-8"))
ON_ZEROGPU = bool(os.environ.get("SPACES_ZERO_GPU"))
HAS_TOKEN = bool(os.environ.get("HF_TOKEN"))
DEFAULT_MODEL = os.environ.get("ATTN_DEFAULT_MODEL") or ("gemma-3-1b" if HAS_TOKEN else BUNDLED)
MODEL_NAMES = [m for m in (os.environ.get("ATTN_MODELS") or ",".join(REGISTRY)).split(",") if m in REGISTRY]
if DEFAULT_MODEL not in MODEL_NAMES:
    DEFAULT_MODEL = MODEL_NAMES[0]

# Every model call goes through spaces.GPU (a no-op off ZeroGPU). 10 s: the worst call
# measured by bench/gpu.py (Gemma 3 1B shapes, bf16, 2048 tokens, weights copied in) took
# 0.7 s on an H200; a short duration queues sooner on ZeroGPU.
GPU = spaces.GPU(duration=int(os.environ.get("ATTN_GPU_SECONDS", "10")))
ENGINE = Engine(model_names=MODEL_NAMES, accelerator=GPU)
FIGURES = FigureCache(int(os.environ.get("ATTN_FIGURE_CACHE_BYTES", 64 << 20)),
                      prefetch=os.environ.get("ATTN_PREFETCH", "1") != "0")
if ON_ZEROGPU:
    # ZeroGPU wants weights placed on cuda at import time, in the main process.
    for _name in MODEL_NAMES:
        try:
            ENGINE.model(_name)
        except AttnError as exc:
            log.error("%s", exc)

HEAD_CHOICES_BASE = ["Mean over heads", "Max over heads"]
BOS_CHOICES = [(f"{k}: {v}", k) for k, v in BOS_MODE_HELP.items()]


# ---- helpers ---------------------------------------------------------------------------
def head_choices(num_heads: int) -> list[str]:
    return HEAD_CHOICES_BASE + [f"Head {i}" for i in range(num_heads)]


def head_value(head) -> str:
    head = parse_head(head)
    return {"mean": HEAD_CHOICES_BASE[0], "max": HEAD_CHOICES_BASE[1]}.get(head, f"Head {head}")


def model_choices() -> list[tuple[str, str]]:
    return [(REGISTRY[n].label, n) for n in MODEL_NAMES]


def model_status_md(name: str) -> str:
    try:
        state, detail = ENGINE.status(name)
    except AttnError as exc:  # a name from a crafted request: say so, as plain text
        return escape(str(exc))
    spec = REGISTRY[name]
    if state == "ready":
        return f"**{spec.label}**: ready ({detail})."
    if state == "error":
        return f"**{spec.label}**: unavailable. {detail}"
    if state == "loading":
        return f"**{spec.label}**: loading ({detail})…"
    return f"**{spec.label}** loads on first use. {spec.notes}"


def svg_html(svg: bytes, alt: str, cls: str) -> str:
    """The figure as an <img>: an SVG image can run no script, whatever its labels say.

    It shrinks with the page, but not below 60% of its size: in a narrow frame the
    labels stay legible and the figure scrolls sideways instead."""
    b64 = base64.b64encode(svg).decode("ascii")
    match = re.search(rb'<svg[^>]*\swidth="([\d.]+)pt"', svg[:2000])
    natural = float(match.group(1)) * 4 / 3 if match else 1200.0  # pt -> CSS px
    return (
        f'<div class="{cls}" style="overflow-x:auto"><img alt="{escape(alt, quote=True)}" '
        f'src="data:image/svg+xml;base64,{b64}" '
        f'style="width:100%;max-width:{natural:.0f}px;min-width:{0.6 * natural:.0f}px;height:auto"></div>'
    )


def share_query(prompt: str, model: str, layer: int, head, bos: str, show_all: bool) -> str:
    params = {"prompt": prompt, "model": model, "layer": int(layer), "head": parse_head(head)}
    if bos != "gray":
        params["bos"] = bos
    if show_all:
        params["all"] = 1
    return "?" + urlencode(params)


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


def get_analysis(prompt: str, model: str, progress: gr.Progress | None = None):
    # A blank prompt needs no model: it is refused at once, not after a load (ENGINE.analyze).
    if progress is not None and isinstance(prompt, str) and prompt.strip() and not ENGINE.is_ready(model):
        wait_for_model(model, progress)
    return ENGINE.analyze(prompt, model)


def note_html(message: str) -> str:
    """The short line under the prompt that says why the last request was refused."""
    return f'<div class="attn-note" role="alert">{escape(message)}</div>' if message else ""


# ---- event handlers --------------------------------------------------------------------
# No handler raises gr.Error: a failed event marks every output with an "Error" badge, which
# hides the controls and the last good analysis. A refused request skips its outputs instead
# and says why in the line under the prompt (and in a toast, from queued events).
def render_view(key: dict | None, layer, head, bos, show_all):
    """Everything that depends on the view; served from the cached analysis.

    The last output is the note under the prompt: set when the view cannot be drawn, left
    alone otherwise (it may be explaining a refused analysis while this redraws the last one)."""
    if not key:
        return (gr.skip(),) * 6
    # Views never run the model: they are served outside the queue, from the cache only
    # (so no toast: gr.Warning reaches the page only from queued events).
    analysis = ENGINE.cached(key["prompt"], key["model"])
    if analysis is None:
        return (gr.skip(),) * 5 + (note_html(
            "This prompt's analysis has left the shared cache; press Analyze to run it again."),)
    try:
        view = check_view(analysis, View(layer=int(layer), head=parse_head(head), bos=bos, show_all=bool(show_all)))
    except AttnError as exc:
        return (gr.skip(),) * 5 + (note_html(str(exc)),)
    kind = analysis.layer_kind(view.layer)
    weights = row(analysis, view)
    info = (
        f"**Layer {view.layer}** of {analysis.num_layers - 1}: **{kind}** attention"
        + (" (sees only the last tokens)" if kind.startswith("local") else " (sees the whole prompt)")
        + f" · {head_label(view.head)} · `<BOS>` weight {weights[0]:.2f}"
        + (" (outside this layer's window)" if kind.startswith("local") and analysis.sliding_window
           and analysis.num_tokens > analysis.sliding_window else "")
    )
    alt = f"Line diagram: attention at layer {view.layer}, {head_label(view.head)}"
    return (
        svg_html(FIGURES.line_svg(analysis, view), alt, "attn-figure"),
        token_html(analysis, view),
        FIGURES.heatmap(analysis, view),
        info,
        share_query(analysis.prompt, analysis.model, view.layer, view.head, view.bos, view.show_all),
        gr.skip(),
    )


def refuse(exc: AttnError, model: str, shown: dict | None) -> tuple:
    """A refused analysis: a toast and the note say why; everything else stays as it was,
    so the last good analysis and the controls stay usable."""
    gr.Warning(escape(str(exc)))  # toasts render HTML: show "<BOS>" as text
    note = str(exc) + (" The views below still show the last analysis." if shown else "")
    return (gr.skip(),) * 5 + (model_status_md(model), note_html(note))


def run_analysis(prompt: str, model: str, layer, head, shown: dict | None = None, progress=gr.Progress()):
    """Analyse (one forward pass, cached) and size the controls to the model."""
    try:
        analysis = get_analysis(prompt, model, progress)
    except AttnError as exc:
        return refuse(exc, model, shown)
    layer = analysis.num_layers - 1 if layer is None else min(max(int(layer), 0), analysis.num_layers - 1)
    head = parse_head(head) if head is not None else "mean"
    if isinstance(head, int) and head >= analysis.num_heads:
        head = "mean"
    summary = (
        f"{continuation_html(analysis)}"
        f'<div style="font-size:12px;color:#666;margin-top:4px">{analysis.num_tokens} tokens with &lt;BOS&gt; · '
        f"{analysis.model} ({analysis.dtype})</div>"
    )
    return (
        {"model": analysis.model, "prompt": analysis.prompt},
        summary,
        top_k_html(analysis),
        gr.update(maximum=analysis.num_layers - 1, value=layer),
        gr.update(choices=head_choices(analysis.num_heads), value=head_value(head)),
        model_status_md(model),
        "",
    )


def preset_layer(preset: dict, model: str) -> int:
    layers = preset.get("layer", {})
    return int(layers.get(model, REGISTRY[model].default_layer))


def on_load(request: gr.Request):
    """Deep links: ?prompt=...&model=...&layer=...&head=...&bos=...&all=1.

    Without a link the page is already built with these defaults: the controls are left
    alone (a slider moved while this event waits is not reset) and only the status is fresh."""
    q = dict(request.query_params) if request is not None else {}
    if not q:
        return (gr.skip(),) * 7 + (model_status_md(DEFAULT_MODEL),)
    model = q.get("model") or DEFAULT_MODEL
    notes = []
    if model not in MODEL_NAMES:
        notes.append(f"Unknown model in the link ({echo(model)}); using {DEFAULT_MODEL}.")
        model = DEFAULT_MODEL
    spec = REGISTRY[model]
    prompt = q.get("prompt", "")
    layer = q.get("layer")
    try:
        layer = int(layer) if layer is not None else preset_layer(EXAMPLES[0], model)
    except ValueError:
        notes.append("The link's layer is not a number; using the suggested layer.")
        layer = preset_layer(EXAMPLES[0], model)
    if not 0 <= layer < spec.num_layers:
        notes.append(f"Layer {layer} is out of range for {spec.label} (0-{spec.num_layers - 1}).")
        layer = min(max(layer, 0), spec.num_layers - 1)
    try:
        head = parse_head(q.get("head", "mean"))
        if isinstance(head, int) and not 0 <= head < spec.num_heads:
            raise AttnError(f"Head {head} is out of range (0-{spec.num_heads - 1}).")
    except AttnError as exc:
        notes.append(f"{exc} Using the mean over heads.")
        head = "mean"
    bos = q.get("bos", "gray")
    if bos not in BOS_MODE_HELP:
        notes.append("Unknown BOS mode in the link; using gray.")
        bos = "gray"
    show_all = q.get("all", "0") in ("1", "true", "yes")
    for note in notes:
        gr.Warning(escape(note))
    return (
        prompt or EXAMPLES[0]["prompt"],
        gr.update(value=model),
        gr.update(maximum=spec.num_layers - 1, value=layer),
        gr.update(choices=head_choices(spec.num_heads), value=head_value(head)),
        bos,
        show_all,
        bool(prompt),
        model_status_md(model),
    )


# ---- API -------------------------------------------------------------------------------
def api_analyze(prompt: str, model: str = BUNDLED) -> dict:
    """Analyse a prompt: next token, top-k, and the last position's attention for every
    layer and head (the JSON schema in the README)."""
    try:
        return get_analysis(prompt, model).to_json()
    except AttnError as exc:
        raise gr.Error(str(exc)) from None


def api_view(prompt: str, model: str = BUNDLED, layer: int = 0, head: str = "mean", bos: str = "gray") -> dict:
    """The weights one view shows (served from the cache when the prompt was analysed)."""
    try:
        analysis = get_analysis(prompt, model)
        view = check_view(analysis, View(layer=layer, head=parse_head(head), bos=bos))
        weights = row(analysis, view)
    except AttnError as exc:
        raise gr.Error(str(exc)) from None
    return {
        "model": analysis.model,
        "layer": view.layer,
        "layer_type": analysis.layer_types[view.layer],
        "head": view.head,
        "bos": view.bos,
        "tokens": analysis.tokens,
        "weights": [round(float(w), 6) for w in weights],
        "next_token": analysis.next_token,
    }


def api_stats() -> dict:
    """Counters for monitoring (and for tests): forward passes run, cache use."""
    s = ENGINE.cache_stats()
    return {
        "forward_calls": ENGINE.forward_calls,
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
    with gr.Blocks(title="Attention explorer") as demo:
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
            with gr.Column(scale=2):
                model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model", elem_id="model")
                status = gr.Markdown(model_status_md(DEFAULT_MODEL), elem_id="model-status")
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
        layer_info = gr.Markdown(elem_id="layer-info")
        figure = gr.HTML(elem_id="figure")
        tokens_view = gr.HTML(elem_id="tokens")
        with gr.Accordion("All layers at once", open=True):
            overview = gr.HTML(elem_id="overview")
        with gr.Row():
            link_query = gr.Textbox(visible=False)
            copy_btn = gr.Button("Copy link to this view", size="sm", elem_id="copy-link", scale=1)
            link = gr.Textbox(label="Link", interactive=False, elem_id="link", scale=4, buttons=["copy"])
        autorun = gr.State(False)

        view_inputs = [key, layer, head, bos, show_all]
        view_outputs = [figure, tokens_view, overview, layer_info, link_query, note]
        analysis_inputs = [prompt, model, layer, head, key]
        analysis_outputs = [key, summary, topk, layer, head, status, note]
        # Progress shows where the result will appear, never over the controls (which are
        # outputs only to be sized to the model) nor over the status.
        analysing = dict(api_visibility="private", concurrency_limit=2, show_progress_on=[summary, figure])
        quiet = dict(api_visibility="private", queue=False, show_progress="hidden")

        def analyse_then_render(event):
            return event.then(render_view, view_inputs, view_outputs, **quiet)

        analyse_then_render(gr.on([analyze_btn.click, prompt.submit], run_analysis, analysis_inputs,
                                  analysis_outputs, **analysing))
        for i, button in enumerate(preset_buttons):
            def fill(model_name, _i=i):
                p = EXAMPLES[_i]
                return p["prompt"], preset_layer(p, model_name), f"**What to look for:** {p['look_for']}"

            analyse_then_render(
                button.click(fill, [model], [prompt, layer, look_for], **quiet)
                .then(run_analysis, analysis_inputs, analysis_outputs, **analysing)
            )
        gr.on([layer.change, head.change, bos.change, show_all.change], render_view, view_inputs,
              view_outputs, **quiet)
        model.change(model_status_md, [model], [status], **quiet)
        copy_btn.click(None, [link_query], [link], js=COPY_JS, api_visibility="private")

        # Queued: gr.Warning (the deep-link notes) only reaches the page from a queued event.
        # No progress: the page is usable while this waits (behind a model load, say).
        load = demo.load(on_load, None, [prompt, model, layer, head, bos, show_all, autorun, status],
                         api_visibility="private", show_progress="hidden")

        def maybe_analyse(run, prompt_text, model_name, layer_value, head_value_, shown, progress=gr.Progress()):
            if not run:
                return (gr.skip(),) * len(analysis_outputs)
            return run_analysis(prompt_text, model_name, layer_value, head_value_, shown, progress)

        analyse_then_render(load.then(maybe_analyse, [autorun, *analysis_inputs], analysis_outputs, **analysing))

        gr.api(api_analyze, api_name="analyze", concurrency_limit=2)
        gr.api(api_view, api_name="view", concurrency_limit=4)
        gr.api(api_stats, api_name="stats", queue=False)
    return demo


demo = build()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    demo.queue(max_size=int(os.environ.get("ATTN_QUEUE_SIZE", "64")), default_concurrency_limit=2)
    demo.launch(share=False, css=CSS, ssr_mode=False, footer_links=["api"], prevent_thread_lock=True)
    if not ON_ZEROGPU:
        ENGINE.preload(DEFAULT_MODEL)  # after the server answers: start-up is not held up by it
    demo.block_thread()
