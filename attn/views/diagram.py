"""The lab's line diagram for one view.

The line diagram keeps the lab's look (Output row over Input row, one blue line per
weight, width proportional to weight, BOS lines gray) and draws every token whenever its
labels fit legibly (attn/views/layout.py); beyond that it shows the most-attended ones in
prompt order, marks hidden runs with "⋯", and says how many are hidden.

`line_svg` draws a view as SVG and says how wide it is; `line_diagram_html` puts that on
the page as an <img>. The pieces of a diagram (its lines, column labels, gap marks, row
titles and title) are shared with the two-prompt comparison (attn/views/compare_diagram.py).
"""

from __future__ import annotations

import base64
from html import escape

import numpy as np
from matplotlib.figure import Figure

from attn.compute.analysis import Analysis
from attn.compute.profiles import sentences_of
from attn.views.drawing import Diagram, Label, Svg, figure_svg
from attn.views.labels import head_label, measure_label, visible
from attn.views.layout import LEGIBLE_PT, REDUCED_COLUMNS, kept_columns, plan_columns, stagger_step
from attn.views.palette import BLUE, GENERATED, GRAY, MUTED_TEXT, PREDICTED, SENTENCE
from attn.views.view import View, check_view, first_generated, matrix, row

MIN_WIDTH, MAX_WIDTH = 0.0, 5.0  # the lab's line thickness range


def line_diagram(analysis: Analysis, view: View, *, max_columns: int | None = None) -> Figure:
    """The lab's figure for one layer and head mode.

    Every token gets a column when its labels are legible on the page: drawn at 9 pt or
    more (12 pt up to 16 tokens, else 10 pt, else 9 pt), in a figure at most 16 in wide
    (1536 CSS px), with each label clear of its neighbours by a quarter em, in one row or
    in two staggered rows; the page never shows a label below 7.2 pt (`line_diagram_html`).
    The artist passage (37 tokens) fits in two rows at 10 pt; columns closer than 12 pt
    (more than 88 tokens) never fit. Otherwise the figure keeps 24 columns: <BOS>, the
    last token and the most attended (`max_columns` forces that reduction at any count).
    """
    view = check_view(analysis, view)
    weights = row(analysis, view)
    n = analysis.num_tokens
    notes = []
    mat = matrix(analysis, view) if view.show_all else None
    if view.show_all and mat is None:
        notes.append("All-pairs mode draws raw attention only; showing the predicting position's row."
                     if view.measure != "raw" else
                     "All-pairs mode is drawn for prompts up to 128 tokens; showing the last row.")
    title = diagram_title(analysis, view)
    plan = plan_columns(analysis, list(range(n)), title, fit=True) if max_columns is None else None
    if plan is None:
        plan = plan_columns(analysis, kept_columns(weights, max_columns or REDUCED_COLUMNS), title, fit=False)
    cols, xs, gaps = plan.cols, plan.xs, plan.gaps
    unit = "words" if analysis.words else "tokens"
    if len(cols) < n:
        share = float(weights[cols].sum() / max(weights.sum(), 1e-12))
        notes.append(
            f"Showing {len(cols)} of {n} {unit}: <BOS>, the last, and the most attended "
            f"({share:.0%} of this row's weight). ⋯ marks hidden {unit}."
        )
    note_colours = ["#555555"] * len(notes)
    generated = generated_note(analysis)
    if generated is not None:
        notes.append(generated)
        note_colours.append(GENERATED)
    ends = sentence_ends(analysis, cols, xs)
    if ends:
        notes.append(f"Teal ticks in the Input row: where a sentence ends ({len(sentences_of(analysis)[0])} "
                     "sentences).")
        note_colours.append(SENTENCE)

    width = plan.width
    fig = Figure(figsize=(width, 3.6 + 0.25 * len(notes)), dpi=100)
    left = 0.95 / width  # room for the row titles, whatever the width
    bottom = 0.12 + 0.05 * len(notes)
    fontsize = plan.fontsize
    # The second row of staggered labels (the box is 66% of the figure's height).
    step = stagger_step(fontsize, 0.66 * fig.get_figheight())

    last = n - 1
    segments, widths, colors = diagram_lines(weights, mat, view, cols, dict(zip(cols, xs)), last)
    for x in ends:
        segments.append(((x, -0.02), (x, -0.24)))
        widths.append(1.5)
        colors.append(SENTENCE)

    labels = []
    gen = first_generated(analysis)
    for k, (c, x) in enumerate(zip(cols, xs)):
        shift = step * ((len(cols) - 1 - k) % plan.rows)  # the prediction's column stays on the inner row
        labels.extend(column_labels(x, plan.outputs[k], plan.inputs[k], fontsize, shift,
                                    predicted=c == last, bos=c == 0, generated_out=c + 1 >= gen,
                                    generated_in=c >= gen))
    for x, hidden in gaps:
        labels.extend(gap_marks(x, hidden))
    labels.extend(row_titles(bottom, 0.66))
    for k, line in enumerate((title, f"{analysis.model} predicts {visible(analysis.next_token, 24)!r}")):
        labels.append(Label(0.5, 0.98 - k * 0.2 / fig.get_figheight(), line, 12, va="top", on_figure=True))
    for k, (note, colour) in enumerate(zip(notes, note_colours)):
        labels.append(Label(0.01, 0.02 + 0.05 * k, note, 9, ha="left", color=colour, on_figure=True))

    fig.add_artist(Diagram(
        box=(left, bottom, 0.99 - left, 0.66), xlim=(-0.7, xs[-1] + 0.7), ylim=(-0.25, 1.25),
        segments=segments, widths=widths, colors=colors, labels=labels, label_pt=fontsize,
    ))
    return fig


def line_svg(analysis: Analysis, view: View) -> Svg:
    """The line diagram for one view, as SVG."""
    return figure_svg(line_diagram(analysis, view))


def line_diagram_html(svg: Svg, view: View, *, alt: str | None = None) -> str:
    """The figure as an <img>: an SVG image can run no script, whatever its labels say.

    It shrinks with the page, but never so far that a label is shown below 7.2 pt
    (`LEGIBLE_PT`, 9.6 CSS px): 12 pt labels allow 60% of the natural size, 10 pt 72%,
    9 pt 80% (1229 px for the widest figure, 16 in = 1536 px; Gradio's page is 1248 px
    wide in a 1280-1535 px window). In a narrower frame the figure scrolls sideways.
    `alt` replaces the short description: `describe.diagram_alt` (the prediction and the
    most attended tokens) or the comparison's `describe.compare_alt`."""
    if alt is None:
        alt = (f"Line diagram: {measure_label(view.measure)}" if view.measure == "rollout" else
               f"Line diagram: {measure_label(view.measure)} at layer {view.layer}, {head_label(view.head)}")
    b64 = base64.b64encode(svg.data).decode("ascii")
    natural = svg.width_px
    smallest = natural * max(0.6, LEGIBLE_PT / svg.label_pt)
    # Focusable, so a keyboard can scroll a figure wider than its frame (WCAG 2.1.1).
    return (
        f'<div class="attn-figure attn-scroll" tabindex="0" role="group" aria-label="Figure" '
        f'style="overflow-x:auto"><img alt="{escape(alt, quote=True)}" '
        f'src="data:image/svg+xml;base64,{b64}" '
        f'style="width:100%;max-width:{natural:.0f}px;min-width:{smallest:.0f}px;height:auto"></div>'
    )


# ---- the pieces of a diagram, shared with the two-prompt comparison


def diagram_title(analysis: Analysis, view: View) -> str:
    """The lab's title for raw attention; the measure's name for the others."""
    if view.measure == "rollout":
        return f"Attention rollout through all {analysis.num_layers} layers · mean over heads"
    name = "Attention Weights" if view.measure == "raw" else "Value-weighted attention"
    return f"{name} for Layer {view.layer} · {analysis.layer_kind(view.layer)} · {head_label(view.head)}"


def diagram_lines(weights: np.ndarray, mat: np.ndarray | None, view: View, cols: list[int],
                  col_x: dict[int, float], last: int) -> tuple[list, list, list]:
    """(segments, widths, colours) of the lines between the drawn columns (token indices
    `cols`, at `col_x`): from the predicting position `last`, or from every position with
    `mat`; widths proportional to weight, <BOS> gray, none to <BOS> when it is hidden."""
    segments, widths, colors = [], [], []
    pairs = (
        [(i, j) for i in cols for j in cols if j <= i]
        if mat is not None
        else [(last, j) for j in cols]
    )
    for i, j in pairs:
        w = float(mat[i, j]) if mat is not None else float(weights[j])
        if w <= 0 or (j == 0 and view.bos == "hide"):
            continue
        segments.append(((col_x[i], 1.0), (col_x[j], 0.0)))
        widths.append(MIN_WIDTH + w * (MAX_WIDTH - MIN_WIDTH))
        colors.append(GRAY if j == 0 else BLUE)
    return segments, widths, colors


def column_labels(x: float, output: str, inp: str, fontsize: float, shift: float, *,
                  predicted: bool, bos: bool, generated_out: bool = False,
                  generated_in: bool = False) -> tuple[Label, Label]:
    """A column's Output label (the prediction bold in its green box) and Input label
    (<BOS> gray italic), `shift` further out for the staggered row. A label of a token
    the model generated (`generated_out`, `generated_in`) is purple italic."""
    out_colour = PREDICTED if predicted else GENERATED if generated_out else "black"
    in_colour = MUTED_TEXT if bos else GENERATED if generated_in else "black"
    return (
        Label(x, 1.07 + shift, output, fontsize, va="bottom", color=out_colour,
              weight="bold" if predicted else "normal", boxed=predicted,
              style="italic" if generated_out and not predicted else "normal"),
        Label(x, -0.07 - shift, inp, fontsize, va="top",
              color=in_colour, style="italic" if bos or generated_in else "normal"),
    )


def sentence_ends(analysis: Analysis, cols: list[int], xs: list[float]) -> list[float]:
    """The x of each boundary between two sentences, halfway between the drawn columns on
    either side of it (attn/compute/profiles.py's sentences; none for one sentence), each x
    once (in a reduced diagram several ends can fall in one gap)."""
    sentences, _ = sentences_of(analysis)
    out = []
    for start, _ in sentences[1:]:
        before = [x for c, x in zip(cols, xs) if c < start]
        after = [x for c, x in zip(cols, xs) if c >= start]
        if before and after:
            out.append((before[-1] + after[0]) / 2)
    return sorted(set(out))


def generated_note(analysis: Analysis) -> str | None:
    """The legend line for the tokens a generation step drew from its own earlier output."""
    count = analysis.num_tokens - first_generated(analysis)
    if count <= 0:
        return None
    unit = "word" if analysis.words else "token"
    them = f"the {unit} the model generated" if count == 1 else f"the {count} {unit}s the model generated"
    return f"Purple italic: {them} in earlier steps (not typed)."


def gap_marks(x: float, hidden: int) -> tuple[Label, Label]:
    """The '⋯' under a gap of hidden columns, and how many it hides."""
    return (Label(x - 0.2, -0.07, "⋯", 9, va="top", color=MUTED_TEXT),
            Label(x - 0.2, -0.2, str(hidden), 6, va="top", color=MUTED_TEXT))


def row_titles(bottom: float, height: float) -> tuple[Label, Label]:
    """'Output:' and 'Input:' at the left of a diagram box (figure fractions)."""
    row_title = dict(size=12, ha="left", weight="bold", on_figure=True)
    return (Label(0.005, bottom + height * (1.07 + 0.25) / 1.5, "Output:", va="bottom", **row_title),
            Label(0.005, bottom + height * (0.25 - 0.07) / 1.5, "Input:", va="top", **row_title))
