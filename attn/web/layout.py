"""The page's components, laid out; `Ui` names them so that handlers return {component: value}."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from attn.model.registry import REGISTRY
from attn.settings import Settings
from attn.views.view import BOS_MODE_HELP, HEAD_CHOICES_BASE, head_choices
from attn.web.embed import EMBED_CSS, EMBED_HEAD
from attn.web.lesson import LESSON_CSS, LESSON_HEAD
from attn.web.popups import POPUP_CSS, POPUP_JS

BOS_CHOICES = [(f"{k}: {v}", k) for k, v in BOS_MODE_HELP.items()]
MEASURE_CHOICES = [("Attention weights", "raw"), ("Value-weighted", "value"), ("Rollout", "rollout")]
ONE_PROMPT_HINT = ('<div class="attn-hint">Removing tokens checks one typed prompt, token by token: it '
                   "works without Compare, Continue (N = 1) or Words.</div>")
ABLATION_HINT = ('<div class="attn-hint">Does the attention explain the prediction? <b>Check by removing '
                 "tokens</b> runs the model once more per token (batched) and shows what each one was worth.</div>")

CSS = """
.attn-figure img { display: block; }
#preset-row button { flex: 1 1 0; }
.attn-hint { color: var(--body-text-color-subdued); padding: 8px 0; }
.attn-note { color: var(--body-text-color); background: var(--color-accent-soft);
             border-left: 3px solid var(--color-accent); padding: 4px 8px; font-size: 14px; }
"""

# Accessibility (WCAG 2.2 AA, docs/accessibility.md): text at 4.5:1 where the theme's gray and
# orange fall short (hints, slider ends, the primary button), a focus ring every control shows,
# each highlighted token's weight read out after it (unseen), and the tables' look.
A11Y_CSS = """
.gradio-container { --body-text-color-subdued: #5f6368; --block-info-text-color: #5f6368;
                    --button-primary-background-fill: #c2410c; --button-primary-background-fill-hover: #9a3412;
                    --button-primary-border-color: #c2410c; --button-primary-text-color: #ffffff;
                    --slider-color: #c2410c; --color-accent: #c2410c; }
.dark .gradio-container { --body-text-color-subdued: #b8bcc4; --block-info-text-color: #b8bcc4; }
.gradio-container { --checkbox-background-color-selected: #c2410c; --checkbox-border-color-selected: #c2410c; }
/* The views are drawn for white paper: in a dark theme they keep it. */
.dark :is(#continuation, #topk, #figure, #tokens, #tables:has(table), #ablation, #overview) {
  --body-text-color: #111111; --body-text-color-subdued: #5f6368; --block-info-text-color: #5f6368;
  background: #ffffff; color: #111111; color-scheme: light; border-radius: 6px; padding: 4px 8px; }
.dark :is(#continuation, #topk, #figure, #tokens, #tables:has(table), #ablation, #overview) .prose { color: #111111; }
:focus-visible, .attn-roving [tabindex="-1"]:focus { outline: 3px solid #1f5fbf !important; outline-offset: 2px; }
.attn-sr, .attn-tok[data-percent]::after, .attn-pred::after {
  position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
.attn-tok[data-percent]::after { content: " (" attr(data-percent) "%)"; }
.attn-pred::after { content: " (the predicted next token)"; }
.attn-tok, .attn-pred { position: relative; }
#tables:not(:has(table)) { display: none; }
.attn-table th, .attn-table td { border: 1px solid #c8c8c8; padding: 2px 8px; text-align: right; color: #111111;
                                 background: #ffffff; white-space: pre; }
.attn-table th[scope=row] { text-align: left; font-weight: normal; font-family: ui-monospace, monospace; }
.attn-table thead th { position: sticky; top: 0; background: #f0f0f0; font-weight: 600; }
.attn-table caption { caption-side: top; text-align: left; padding: 4px 0; color: #333333; white-space: normal; }
"""
# The sentence strip and the profile grid are drawn for white paper like the other views; the
# lesson panel's text too: in a dark theme they keep it.
PAPER_CSS = """
.dark :is(#sentence-strip, #profile-grid, #lesson-step, #lesson-reading) {
  --body-text-color: #111111; --body-text-color-subdued: #5f6368; background: #ffffff; color: #111111;
  color-scheme: light; border-radius: 6px; padding: 4px 8px; }
.dark :is(#sentence-strip, #profile-grid, #lesson-step, #lesson-reading) .prose { color: #111111; }
"""
CSS += A11Y_CSS + POPUP_CSS + EMBED_CSS + LESSON_CSS + PAPER_CSS
HEAD = EMBED_HEAD + POPUP_JS + LESSON_HEAD  # the page's <head>: the embed mode's switch, the popups, lesson mode's

PROFILE_CHOICES = [("<BOS> share", "bos"), ("Previous token", "previous"), ("Entropy (spread)", "entropy")]
# The profile grid (attn/views/profile_grid.py): a pressed cell picks its layer and head; the
# line under the grid reads the cell under the pointer or the keyboard focus.
PICK_JS = """
const cell = (event) => event.target.closest && event.target.closest('button[data-layer]');
element.addEventListener('click', (event) => {
  const b = cell(event);
  if (b) trigger('click', {layer: Number(b.dataset.layer), head: Number(b.dataset.head)});
});
const read = (event) => {
  const b = cell(event);
  const line = b && b.closest('.attn-profiles').querySelector('.attn-pread');
  if (line) line.textContent = b.getAttribute('aria-label');
};
element.addEventListener('mouseover', read);
element.addEventListener('focusin', read);
// One tab stop per grid; the arrow keys, Home and End move between its cells.
element.addEventListener('keydown', (event) => {
  const b = cell(event);
  const moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
  if (!b || !(event.key in moves || event.key === 'Home' || event.key === 'End')) return;
  const grid = b.closest('table');
  let layer = Number(b.dataset.layer), head = Number(b.dataset.head);
  if (event.key === 'Home') head = 0;
  else if (event.key === 'End') head = grid.querySelectorAll(`button[data-layer="${layer}"]`).length - 1;
  else { layer += moves[event.key][0]; head += moves[event.key][1]; }
  const next = grid.querySelector(`button[data-layer="${layer}"][data-head="${head}"]`);
  if (!next) return;
  event.preventDefault();
  b.tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
});
"""

COPY_JS = """
(query) => {
  const embed = new URLSearchParams(window.location.search).get('embed') === '1';
  const url = window.location.origin + window.location.pathname + query + (embed ? '&embed=1' : '');
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {}
  return url;
}
"""


def preset_layer(preset: dict, model: str) -> int:
    return int(preset.get("layer", {}).get(model, REGISTRY[model].default_layer))


def look_for_md(examples: list[dict], prompt: str) -> str:
    """The hint beside a prompt: its preset's "What to look for", or nothing for a prompt of
    the visitor's own (a hint for another prompt would mislead)."""
    hint = next((p["look_for"] for p in examples if p["prompt"] == prompt), "")
    return f"**What to look for:** {hint}" if hint else ""


@dataclass(frozen=True)
class Ui:
    """Every component the events read or write, by name (the layout's order)."""

    shown: gr.State  # attn.web.subject.Shown or None: what the views draw, this visitor's own
    prompt: gr.Textbox
    note: gr.HTML  # the line under the prompt: why a request was refused
    preset_buttons: list[gr.Button]
    look_for: gr.Markdown
    compare_on: gr.Checkbox
    prompt_b: gr.Textbox
    continue_box: gr.Accordion
    n_new: gr.Slider
    temperature: gr.Slider
    seed: gr.Number
    model: gr.Dropdown
    status: gr.Markdown
    analyze_btn: gr.Button
    summary: gr.HTML
    topk: gr.HTML
    layer: gr.Slider
    head: gr.Dropdown
    bos: gr.Radio
    show_all: gr.Checkbox
    measure: gr.Radio
    by_words: gr.Checkbox
    step: gr.Slider
    layer_info: gr.Markdown
    figure: gr.HTML
    tokens_view: gr.HTML
    ablate_btn: gr.Button
    ablation: gr.HTML
    overview: gr.HTML
    link_query: gr.Textbox
    copy_btn: gr.Button
    link: gr.Textbox
    export_btn: gr.Button
    exported: gr.File
    autorun: gr.State  # whether a deep link asked for an analysis
    as_table: gr.Checkbox  # "Show as table": the view's numbers as tables (attn/views/tables.py)
    tables: gr.HTML
    open_full: gr.HTML  # the embed mode's link to the whole explorer (attn/web/embed.py)
    smaller: gr.Button  # after a GPU refusal: the same prompt on the smaller model (attn/web/refusal.py)
    # Issue 22: attention per sentence beside the heatmap, the head-profile grid and its choice.
    sentence_strip: gr.HTML
    profile: gr.Radio
    profile_grid: gr.HTML

    @property
    def view_inputs(self) -> list:
        return [self.shown, self.step, self.layer, self.head, self.bos, self.show_all, self.measure, self.by_words]

    @property
    def view_outputs(self) -> list:
        return [self.figure, self.tokens_view, self.ablation, self.overview, self.layer_info, self.link_query,
                self.summary, self.topk, self.note, self.sentence_strip, self.profile_grid]

    @property
    def analysis_inputs(self) -> list:
        return [self.prompt, self.model, self.layer, self.head, self.shown, self.compare_on, self.prompt_b,
                self.n_new, self.temperature, self.seed, self.step]

    @property
    def analysis_outputs(self) -> list:
        return [self.shown, self.summary, self.topk, self.layer, self.head, self.status, self.note, self.step,
                self.smaller, self.look_for]

    @property
    def link_outputs(self) -> list:
        """What a deep link sets when the page loads."""
        return [self.prompt, self.model, self.layer, self.head, self.bos, self.show_all, self.measure, self.by_words,
                self.compare_on, self.prompt_b, self.n_new, self.temperature, self.seed, self.step,
                self.continue_box, self.autorun, self.status,
                # the first sight, replaced by the link's view or cleared (Handlers.on_load)
                self.shown, self.summary, self.topk, self.figure, self.tokens_view, self.overview, self.layer_info,
                self.look_for, self.ablation, self.link_query, self.note]


def lay_out(settings: Settings, examples: list[dict], status: str) -> Ui:
    """The components, inside the open gr.Blocks; `status`: the default model's status line."""
    default_model = settings.default_model
    default_spec = REGISTRY[default_model]
    gr.Markdown(
        "# What does the model look at?\n"
        "Type a prompt (or pick a preset). The model predicts the **next token**; the views show, "
        "layer by layer and head by head, how much attention that prediction paid to each prompt "
        "token. Thicker lines and darker shading mean more attention. Moving the controls re-draws "
        "from one cached forward pass: it never runs the model again.",
        elem_id="intro",
    )
    shown = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(examples[0]["prompt"], label="Prompt", lines=3, max_lines=12,
                                elem_id="prompt", placeholder="Jide was hungry so she went looking for")
            note = gr.HTML(elem_id="prompt-note")
            smaller = gr.Button("Analyze on the smaller model instead", visible=False, size="sm",
                                elem_id="smaller-model")
            with gr.Row(elem_id="preset-row"):
                preset_buttons = [gr.Button(p["name"], size="sm", elem_id=f"preset-{i}")
                                  for i, p in enumerate(examples)]
            look_for = gr.Markdown("", elem_id="look-for")
            with gr.Row(elem_id="compare-row"):
                compare_on = gr.Checkbox(label="Compare with a second prompt (B)", value=False,
                                         elem_id="compare-on", scale=1)
                prompt_b = gr.Textbox(examples[1]["prompt"], label="Prompt B", lines=1, max_lines=6,
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
            model = gr.Dropdown([(REGISTRY[n].label, n) for n in settings.models], value=default_model,
                                label="Model", elem_id="model")
            status = gr.Markdown(status, elem_id="model-status")
            analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
            open_full = gr.HTML(elem_id="open-full")
    with gr.Row(elem_id="prediction-row"):
        with gr.Column(scale=3):
            # Room for the progress of a model load or an analysis, before the first result.
            summary = gr.HTML('<div class="attn-hint">Press Analyze or pick a preset: the prediction '
                              "appears here.</div>", elem_id="continuation", min_height=64)
        with gr.Column(scale=2):
            topk = gr.HTML(elem_id="topk")
    with gr.Row():
        layer = gr.Slider(0, default_spec.num_layers - 1, step=1, value=preset_layer(examples[0], default_model),
                          label="Layer", elem_id="layer", scale=3)
        head = gr.Dropdown(head_choices(default_spec.num_heads), value=HEAD_CHOICES_BASE[0],
                           label="Head (default: mean over heads)", elem_id="head", scale=1)
        bos = gr.Radio(BOS_CHOICES, value="gray", label="<BOS> (attention sink)", elem_id="bos", scale=2)
        show_all = gr.Checkbox(label="Show all weights (every position, as in the lab)", value=False,
                               elem_id="show-all", scale=1)
    measure = gr.Radio(MEASURE_CHOICES, value="raw", label="Measure", elem_id="measure",
                       info="Raw weights (the lab); weighted by how far each value moves the output "
                            "(Kobayashi et al. 2020); or traced through every layer (Abnar & Zuidema 2020)")
    with gr.Row(elem_id="words-row"):
        by_words = gr.Checkbox(label="Words, not pieces (attention summed per word)", value=False,
                               elem_id="words", scale=1)
        step = gr.Slider(0, 31, step=1, value=0, label="Step: the generated token whose prediction is shown",
                         elem_id="step", visible=False, scale=3)
    layer_info = gr.Markdown(elem_id="layer-info")
    figure = gr.HTML(elem_id="figure")
    tokens_view = gr.HTML(elem_id="tokens")
    as_table = gr.Checkbox(label="Show as table (every token's weight and rank, for screen readers and copying)",
                           value=False, elem_id="as-table")
    tables = gr.HTML(elem_id="tables")
    ablate_btn = gr.Button("Check by removing tokens", size="sm", elem_id="ablate")
    ablation = gr.HTML(ABLATION_HINT, elem_id="ablation")
    with gr.Accordion("All layers at once", open=True, elem_id="all-layers"):
        with gr.Row():
            overview = gr.HTML(elem_id="overview", scale=4)
            sentence_strip = gr.HTML(elem_id="sentence-strip", scale=1, min_width=180)
    with gr.Accordion("Heads and layers: profiles", open=True, elem_id="profiles"):
        profile = gr.Radio(PROFILE_CHOICES, value="bos", label="Head profile", elem_id="profile")
        profile_grid = gr.HTML(elem_id="profile-grid", js_on_load=PICK_JS)
    with gr.Row():
        link_query = gr.Textbox(visible=False)
        copy_btn = gr.Button("Copy link to this view", size="sm", elem_id="copy-link", scale=1)
        link = gr.Textbox(label="Link", interactive=False, elem_id="link", scale=4, buttons=["copy"])
    with gr.Row(elem_id="export-row"):
        export_btn = gr.Button("Download this view (PNG, SVG, CSV, JSON)", size="sm", elem_id="export", scale=1)
        # Shown once it holds files: Gradio's empty file box is a div with an aria-label and no role.
        exported = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="export-files",
                           scale=4, height=140, visible=False)
    autorun = gr.State(False)
    return Ui(shown=shown, prompt=prompt, note=note, preset_buttons=preset_buttons, look_for=look_for,
              compare_on=compare_on, prompt_b=prompt_b, continue_box=continue_box, n_new=n_new,
              temperature=temperature, seed=seed, model=model, status=status, analyze_btn=analyze_btn,
              summary=summary, topk=topk, layer=layer, head=head, bos=bos, show_all=show_all, measure=measure,
              by_words=by_words, step=step, layer_info=layer_info, figure=figure, tokens_view=tokens_view,
              ablate_btn=ablate_btn, ablation=ablation, overview=overview, link_query=link_query,
              copy_btn=copy_btn, link=link, export_btn=export_btn, exported=exported, autorun=autorun,
              as_table=as_table, tables=tables, open_full=open_full, smaller=smaller,
              sentence_strip=sentence_strip, profile=profile, profile_grid=profile_grid)
