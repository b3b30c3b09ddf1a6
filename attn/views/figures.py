"""The lab's line diagram, in matplotlib.

The line diagram keeps the lab's look (Output row over Input row, one blue line per
weight, width proportional to weight, BOS lines gray) and draws every token whenever its
labels fit legibly (see `line_diagram`); beyond that it shows the most-attended ones in
prompt order, marks hidden runs with "⋯", and says how many are hidden. Figures are built
on `Figure` directly (no pyplot global state), so concurrent requests never share a
canvas; saving takes a lock, because the settings it needs (rcParams, warning filters)
are process-wide.

`line_svg` draws a view as SVG and says how wide it is; `line_diagram_html` puts that on
the page as an <img>.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from html import escape, unescape

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_svg import RendererSVG
from matplotlib.colors import to_hex, to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont, get_font
from matplotlib.ft2font import LoadFlags
from matplotlib.patches import BoxStyle
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import IdentityTransform

from attn.compute.analysis import Analysis
from attn.views.labels import MAX_LABEL_CHARS, head_label, measure_label, visible
from attn.views.palette import BLUE, GENERATED, GRAY, PREDICTED, PREDICTED_FILL
from attn.views.view import View, check_view, first_generated, matrix, row

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

MIN_WIDTH, MAX_WIDTH = 0.0, 5.0  # the lab's line thickness range

# What "legible" means for the diagram (see line_diagram and line_diagram_html).
MAX_FIGURE_IN = 16.0  # the widest figure: 1536 CSS px at its natural size
REDUCED_COLUMNS = 24  # columns kept when the labels of every token cannot fit
MIN_PITCH_PT = 12.0  # columns closer than this blur their lines together, whatever the labels
LABEL_GAP_EM = 0.25  # clear space between two labels in a row, in ems of their font
ROW_STEP_EM = 1.3  # the second row of staggered labels sits this far from the first
LEGIBLE_PT = 7.2  # the smallest a label may be shown on the page: 12 pt labels at 60%


def _columns(weights: np.ndarray, max_columns: int) -> list[int]:
    """Which token positions get a column: all of them, or BOS + the strongest + the last."""
    n = len(weights)
    if n <= max_columns:
        return list(range(n))
    keep = {0, n - 1}
    for i in np.argsort(-weights[1:], kind="stable") + 1:
        if len(keep) >= max_columns:
            break
        keep.add(int(i))
    return sorted(keep)


def _layout(cols: list[int]) -> tuple[list[float], list[tuple[float, int]]]:
    """x for each column, plus (x, hidden count) for each '⋯' gap between columns."""
    xs, gaps, x = [], [], 0.0
    for k, c in enumerate(cols):
        if k and c - cols[k - 1] > 1:
            gaps.append((x, c - cols[k - 1] - 1))
            x += 0.6
        xs.append(x)
        x += 1.0
    return xs, gaps


@dataclass(frozen=True)
class Label:
    """One piece of text: at (x, y) in data units, or in figure fractions when `on_figure`."""

    x: float
    y: float
    text: str
    size: float
    va: str = "baseline"  # "bottom" | "top" | "baseline"
    ha: str = "center"  # "center" | "left"
    color: str = "black"
    weight: str = "normal"
    style: str = "normal"
    boxed: bool = False  # the predicted token's rounded green box
    on_figure: bool = False
    box_edge: str = PREDICTED  # a boxed label's border and fill (the comparison boxes other tokens)
    box_fill: str = PREDICTED_FILL


@dataclass(frozen=True)
class Plan:
    """Which columns a diagram draws and how its labels sit: positions in data units (one
    unit per column), the figure's width, the labels' font size and rows (1, or 2 staggered)."""

    cols: list[int]
    xs: list[float]
    gaps: list[tuple[float, int]]
    width: float  # inches
    fontsize: float
    label_chars: int
    rows: int
    inputs: list[str]
    outputs: list[str]


def _plan(analysis: Analysis, cols: list[int], title: str, *, fit: bool) -> Plan | None:
    """Lay out these columns. With `fit`, choose font size and rows so that no two labels
    touch, or return None when no legible choice exists; without (the reduced figure), one
    row at a size set by the column count, drawn whatever the labels."""
    xs, gaps = _layout(cols)
    width, pitch = figure_width(xs, title)
    if fit and pitch < MIN_PITCH_PT:
        return None  # decided before reading a label: a 2048-token prompt costs nothing here
    n = len(cols)
    label_chars = max_label_chars(n)
    last = analysis.num_tokens - 1
    inputs = [visible(analysis.tokens[c], label_chars) for c in cols]
    outputs = [visible(analysis.next_token if c == last else analysis.tokens[c + 1], label_chars) for c in cols]

    def plan(fontsize, rows):
        return Plan(cols, xs, gaps, width, fontsize, label_chars, rows, inputs, outputs)

    if not fit:
        return plan(reduced_fontsize(n), 1)
    x = np.asarray(xs) * pitch
    gen = first_generated(analysis)  # generated labels are italic, as <BOS> is
    em_in = np.array([_em_width(t, "normal", "italic" if c == 0 or c >= gen else "normal")
                      for t, c in zip(inputs, cols)])
    em_out = np.array([_em_width(t, "bold" if c == last else "normal", "italic" if gen <= c + 1 <= last else "normal")
                       + (0.4 if c == last else 0.0)
                       for t, c in zip(outputs, cols)])  # the prediction's box pads 0.2 em a side
    candidates = label_candidates(n)
    for fontsize, rows in candidates:
        if all(_clear(x, fontsize * em, rows, fontsize * LABEL_GAP_EM) for em in (em_in, em_out)):
            return plan(fontsize, rows)
    return plan(*candidates[-1]) if n <= REDUCED_COLUMNS else None  # short prompts are never cut


# ---- the pieces of a diagram, shared with the two-prompt comparison (attn/compare_view.py)


def column_layout(cols: list[int]) -> tuple[list[float], list[tuple[float, int]]]:
    """x for each kept column (indices in any sequence of columns), and the '⋯' gaps."""
    return _layout(cols)


def em_width(text: str, weight: str = "normal", style: str = "normal") -> float:
    """A label's width in ems of its font, before any renderer exists."""
    return _em_width(text, weight, style)


def figure_width(xs: list[float], title: str) -> tuple[float, float]:
    """The figure's width (inches) for columns at `xs` under a title line, and the columns'
    pitch in points."""
    # Wide enough for the columns and for the title (12 pt: about 0.095 in per character).
    width = float(np.clip(max(0.62 * (xs[-1] + 1) + 1.0, 0.095 * len(title) + 0.4), 6.0, MAX_FIGURE_IN))
    pitch = (0.99 * width - 0.95) * 72 / (xs[-1] + 1.4)  # points per column: the box spans xlim
    return width, pitch


def max_label_chars(n: int) -> int:
    """How many characters a label keeps when `n` columns are drawn."""
    return MAX_LABEL_CHARS if n <= 16 else 9


def label_candidates(n: int) -> list[tuple[int, int]]:
    """(font size, rows) to try for `n` columns, most legible first."""
    return [(12, 1), (12, 2)] if n <= 16 else [(10, 1), (9, 1), (10, 2), (9, 2)]


def reduced_fontsize(n: int) -> int:
    """The labels' size in a reduced figure of `n` columns (one row, drawn whatever they say)."""
    return 12 if n <= 16 else 10 if n <= 24 else 9


def clear_in_rows(x: np.ndarray, widths: np.ndarray, row_of: np.ndarray, gap: float) -> bool:
    """Like `_clear`, for labels that need not fill every column: each label (centred at x,
    points) clears the next one in its own row (`row_of`) by `gap`."""
    for r in np.unique(row_of):
        xr, wr = x[row_of == r], widths[row_of == r]
        if len(xr) > 1 and not np.all(np.diff(xr) >= (wr[1:] + wr[:-1]) / 2 + gap):
            return False
    return True


def stagger_step(fontsize: float, box_in: float) -> float:
    """How far (data units) the second row of staggered labels sits from the first: one line
    further out, in a box `box_in` inches tall that spans 1.5 units."""
    return ROW_STEP_EM * fontsize / 72 * 1.5 / box_in


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
    in_colour = "#777777" if bos else GENERATED if generated_in else "black"
    return (
        Label(x, 1.07 + shift, output, fontsize, va="bottom", color=out_colour,
              weight="bold" if predicted else "normal", boxed=predicted,
              style="italic" if generated_out and not predicted else "normal"),
        Label(x, -0.07 - shift, inp, fontsize, va="top",
              color=in_colour, style="italic" if bos or generated_in else "normal"),
    )


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
    return (Label(x - 0.2, -0.07, "⋯", 9, va="top", color="#888888"),
            Label(x - 0.2, -0.2, str(hidden), 6, va="top", color="#888888"))


def row_titles(bottom: float, height: float) -> tuple[Label, Label]:
    """'Output:' and 'Input:' at the left of a diagram box (figure fractions)."""
    row_title = dict(size=12, ha="left", weight="bold", on_figure=True)
    return (Label(0.005, bottom + height * (1.07 + 0.25) / 1.5, "Output:", va="bottom", **row_title),
            Label(0.005, bottom + height * (0.25 - 0.07) / 1.5, "Input:", va="top", **row_title))


def _clear(x: np.ndarray, widths: np.ndarray, rows: int, gap: float) -> bool:
    """Every label (centred at x, points) clears the next one in its row by `gap`; with
    two rows, columns alternate between them."""
    if len(x) <= rows:
        return True
    return bool(np.all(x[rows:] - x[:-rows] >= (widths[rows:] + widths[:-rows]) / 2 + gap))


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
    plan = _plan(analysis, list(range(n)), title, fit=True) if max_columns is None else None
    if plan is None:
        plan = _plan(analysis, _columns(weights, max_columns or REDUCED_COLUMNS), title, fit=False)
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

    width = plan.width
    fig = Figure(figsize=(width, 3.6 + 0.25 * len(notes)), dpi=100)
    left = 0.95 / width  # room for the row titles, whatever the width
    bottom = 0.12 + 0.05 * len(notes)
    fontsize = plan.fontsize
    # The second row of staggered labels (the box is 66% of the figure's height).
    step = stagger_step(fontsize, 0.66 * fig.get_figheight())

    last = n - 1
    segments, widths, colors = diagram_lines(weights, mat, view, cols, dict(zip(cols, xs)), last)

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


def label_size(fig: Figure) -> float:
    """The font size (pt) of a line diagram's token labels."""
    return next(a.label_pt for a in fig.artists if isinstance(a, Diagram))


def diagram_title(analysis: Analysis, view: View) -> str:
    """The lab's title for raw attention; the measure's name for the others."""
    if view.measure == "rollout":
        return f"Attention rollout through all {analysis.num_layers} layers · mean over heads"
    name = "Attention Weights" if view.measure == "raw" else "Value-weighted attention"
    return f"{name} for Layer {view.layer} · {analysis.layer_kind(view.layer)} · {head_label(view.head)}"


class Diagram(Artist):
    """The whole diagram drawn straight onto matplotlib's renderer (SVG or Agg).

    A matplotlib Text artist in an Axes costs about half a millisecond to build, lay out
    and write; this draws the same labels for a few microseconds each, so drawing a view
    costs milliseconds and a slider move never waits for a figure. Text stays text: the
    SVG backend writes each label as a centred <text> (XML-escaped, never mathtext).
    """

    def __init__(self, *, box, xlim, ylim, segments, widths, colors, labels, label_pt=12.0):
        super().__init__()
        self.box, self.xlim, self.ylim = box, xlim, ylim
        self.segments, self.widths, self.colors = segments, widths, colors
        self.labels = labels
        self.label_pt = label_pt  # the token labels' size, for the page's legibility floor

    def draw(self, renderer):
        to_display = self.figure.transFigure.transform
        gc = renderer.new_gc()
        svg = _as_svg(renderer)
        if self.segments and svg is not None:
            ends = to_display(self._to_figure(np.asarray(self.segments, dtype=float).reshape(-1, 2)))
            _svg_lines(svg, ends.reshape(-1, 2, 2), self.widths, self.colors)
        elif self.segments:
            ends = to_display(self._to_figure(np.asarray(self.segments, dtype=float).reshape(-1, 2)))
            gc.set_alpha(0.7)
            for (a, b), width, color in zip(ends.reshape(-1, 2, 2), self.widths, self.colors):
                gc.set_linewidth(width)
                gc.set_foreground(_rgba(color), isRGBA=True)
                renderer.draw_path(gc, Path([a, b]), IdentityTransform())
            gc.set_alpha(1.0)
        labels = self.labels
        points = np.array([(lb.x, lb.y) for lb in labels], dtype=float).reshape(-1, 2)
        in_data = np.array([not lb.on_figure for lb in labels], dtype=bool)
        points[in_data] = self._to_figure(points[in_data])
        points = to_display(points)
        anchor = Text(transform=IdentityTransform())  # where the SVG backend centres the text
        svg_anchors = svg is not None and matplotlib.rcParams["svg.fonttype"] == "none"
        flip = renderer.get_canvas_width_height()[1] if renderer.flipy() else None
        for label, (x, y) in zip(labels, points):
            prop = _font(label.size, label.weight, label.style)
            ascent, descent = _vertical_metrics(renderer, prop)
            y += descent if label.va == "bottom" else -ascent if label.va == "top" else 0.0  # the baseline
            start = x
            if label.ha == "center" and (label.boxed or not svg_anchors):
                start = x - _width(renderer, label.text, prop) / 2
            if label.boxed:
                _draw_box(renderer, start, y - descent, 2 * (x - start), ascent + descent, prop,
                          label.box_edge, label.box_fill)
            if FAST_TEXT and svg_anchors and flip == svg.height:
                _svg_text(svg, x, flip - y, label.text, _text_style(prop, label.color, label.ha))
                continue
            gc.set_foreground(_rgba(label.color), isRGBA=True)
            anchor.set_position((x, y))
            if anchor.get_horizontalalignment() != label.ha:
                anchor.set_horizontalalignment(label.ha)
            renderer.draw_text(
                gc, start, y if flip is None else flip - y, label.text, prop, 0, ismath=False, mtext=anchor
            )
        gc.restore()
        self.stale = False

    def _to_figure(self, xy: np.ndarray) -> np.ndarray:
        """Data units (the lab's axes: columns along x, Input at y=0, Output at y=1) to
        figure fractions."""
        (x0, x1), (y0, y1), (bl, bb, bw, bh) = self.xlim, self.ylim, self.box
        return np.column_stack((bl + (xy[:, 0] - x0) / (x1 - x0) * bw, bb + (xy[:, 1] - y0) / (y1 - y0) * bh))


def _as_svg(renderer) -> RendererSVG | None:
    """The SVG renderer, also from under the wrapper savefig puts around it."""
    inner = getattr(renderer, "_renderer", renderer)  # MixedModeRenderer's vector renderer
    return inner if isinstance(inner, RendererSVG) else None


def _svg_lines(renderer: RendererSVG, ends: np.ndarray, widths, colors) -> None:
    """The lines as matplotlib's SVG writer writes them (the same <path>, d and style), for a
    quarter of the cost: its draw_path (clipping, graphics context, CSS) costs tens of
    microseconds a line, and all-pairs mode draws hundreds (703 for the artist passage)."""
    flip = renderer.height  # SVG's y grows downwards
    element = renderer.writer.element
    for (a, b), width, color in zip(ends, widths, colors):
        element("path", d=f"M {_num(a[0])} {_num(flip - a[1])} \nL {_num(b[0])} {_num(flip - b[1])} \n",
                style=f"fill: none; opacity: 0.7; stroke: {_hex(color)}; stroke-width: {_num(width)}")


def _svg_text(renderer: RendererSVG, x: float, y: float, text: str, style: str) -> None:
    """A label as matplotlib's SVG writer writes unrotated anchored text (the same <text>,
    style, x, y and transform), for a fraction of the cost: its draw_text rebuilds the font
    CSS and the graphics state for every label, ~0.2 ms each, half of a view's drawing."""
    renderer.writer.element("text", text, attrib={
        "style": style, "x": _num(x), "y": _num(y), "transform": f"rotate(0 {_num(x)} {_num(y)})"})


FAST_TEXT = True  # False: every label through matplotlib's draw_text (the tests compare the two)
_STYLES: dict = {}


def _text_style(prop: FontProperties, color: str, ha: str) -> str:
    """The style attribute matplotlib's SVG writer gives such a label, read once from the
    writer itself (font names, weight and colour as it spells them) and kept."""
    key = (prop, color, ha, tuple(matplotlib.rcParams["font.family"]),
           tuple(matplotlib.rcParams["font.sans-serif"]))
    style = _STYLES.get(key)
    if style is None:
        written = io.StringIO()
        scratch = RendererSVG(10, 10, written)
        gc = scratch.new_gc()
        gc.set_foreground(_rgba(color), isRGBA=True)
        scratch.draw_text(gc, 0, 0, "x", prop, 0, ismath=False,
                          mtext=Text(transform=IdentityTransform(), horizontalalignment=ha))
        gc.restore()
        style = _STYLES[key] = unescape(re.findall(r'<text [^>]*?style="([^"]*)"', written.getvalue())[-1])
    return style


def _num(x: float) -> str:
    """A number as matplotlib's SVG writer prints it: six decimals, trailing zeros cut."""
    return f"{x:f}".rstrip("0").rstrip(".")


@lru_cache(maxsize=64)
def _hex(color: str) -> str:
    return to_hex(color)


@lru_cache(maxsize=64)
def _rgba(color: str) -> tuple[float, float, float, float]:
    return to_rgba(color)


def _draw_box(renderer, x, y, width, height, prop, edge=PREDICTED, fill=PREDICTED_FILL) -> None:
    """The predicted token's box: rounded, padded by 0.2 of the font size."""
    size = renderer.points_to_pixels(prop.get_size_in_points())
    path = BoxStyle("round", pad=0.2)(x, y, width, height, size)
    box = renderer.new_gc()
    box.set_foreground(edge)
    box.set_linewidth(1.0)
    renderer.draw_path(box, path, IdentityTransform(), to_rgb(fill))
    box.restore()


@lru_cache(maxsize=64)
def _font(size: float, weight: str, style: str) -> FontProperties:
    return FontProperties(size=size, weight=weight, style=style)


# Text metrics depend only on the string, the font and the renderer's scale: cache them
# (bounded), since the same token labels come back in every view of a prompt.
_METRICS: dict = {}
_METRICS_MAX = 20_000


def _measure(renderer, text: str, prop: FontProperties) -> tuple[float, float, float]:
    key = (type(renderer).__name__, renderer.points_to_pixels(1.0), text, prop.get_size_in_points(),
           prop.get_weight(), prop.get_style())
    found = _METRICS.get(key)
    if found is None:
        if len(_METRICS) >= _METRICS_MAX:
            _METRICS.clear()
        found = _METRICS[key] = renderer.get_text_width_height_descent(text, prop, ismath=False)
    return found


def _width(renderer, text: str, prop: FontProperties) -> float:
    return _measure(renderer, text, prop)[0]


def _vertical_metrics(renderer, prop: FontProperties) -> tuple[float, float]:
    """(ascent, descent) of a line, as matplotlib's own text layout measures it ("lp")."""
    _, h, d = _measure(renderer, "lp", prop)
    return h - d, d


# Label widths for the layout, before any renderer exists: each character's advance in
# ems, read once from the font (FT2Font.set_text costs ~1 ms a call here, a cached
# advance nothing). Kerning is left out; a character the font lacks counts 1 em, about
# what a browser's fallback font (CJK, emoji) gives it.
_ADVANCES: dict[tuple[str, str, str], float] = {}
_ADVANCES_MAX = 50_000


def _em_width(text: str, weight: str, style: str) -> float:
    """The width of a label in ems of its font (DejaVu Sans, as drawn and as the SVG asks)."""
    total = 0.0
    for ch in text:
        key = (ch, weight, style)
        advance = _ADVANCES.get(key)
        if advance is None:
            if len(_ADVANCES) >= _ADVANCES_MAX:
                _ADVANCES.clear()
            advance = _ADVANCES[key] = _advance(ch, weight, style)
        total += advance
    return total


def _advance(ch: str, weight: str, style: str) -> float:
    font = get_font(findfont(_font(72.0, weight, style)))  # one per thread: safe to use here
    if ord(ch) not in _charmap(font.fname):
        return 1.0
    font.set_size(72.0, 72)  # 1 em = 72 px
    return font.load_char(ord(ch), flags=LoadFlags.NO_HINTING).linearHoriAdvance / 65536 / 72


@lru_cache(maxsize=8)
def _charmap(fname) -> frozenset[int]:
    return frozenset(get_font(fname).get_charmap())


_SAVING = threading.Lock()  # savefig below changes process-wide settings


def to_svg(fig: Figure, metadata: dict | None = None) -> bytes:
    """SVG with real <text> (not glyph paths): about 14x faster than PNG here, crisp at any
    zoom, and the browser's fonts cover emoji and CJK that matplotlib's fonts lack.
    Text is XML-escaped by matplotlib's SVG writer. `metadata` as savefig takes it
    (Title, Date: None for a file that does not change with the clock)."""
    buf = io.BytesIO()
    # rc_context and catch_warnings change process-wide settings: two threads drawing at once
    # (a request and the prefetcher) could restore them under each other, and text came out
    # as glyph paths.
    with _SAVING, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "attn"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="svg", metadata=metadata)
    return buf.getvalue()


def to_png(fig: Figure, dpi: int = 100, metadata: dict | None = None) -> bytes:
    """Raster export (README pictures, downloads): `dpi` is recorded in the file, missing
    glyphs are not errors (they are drawn as boxes: matplotlib's fonts lack emoji and CJK)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with _SAVING, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=dpi, metadata=metadata)
    return buf.getvalue()


@dataclass(frozen=True)
class Svg:
    """A drawing as SVG, its natural width in CSS pixels and its labels' font size."""

    data: bytes
    width_px: float
    label_pt: float = 12.0

    def __len__(self) -> int:  # bytes held, for a cache's byte bound
        return len(self.data)


def line_svg(analysis: Analysis, view: View) -> Svg:
    """The line diagram for one view, as SVG."""
    fig = line_diagram(analysis, view)
    # inches -> pt (the SVG's unit) -> CSS px
    return Svg(to_svg(fig), fig.get_figwidth() * 72 * 4 / 3, label_size(fig))


def line_diagram_html(svg: Svg, view: View, *, alt: str | None = None) -> str:
    """The figure as an <img>: an SVG image can run no script, whatever its labels say.

    It shrinks with the page, but never so far that a label is shown below 7.2 pt
    (`LEGIBLE_PT`, 9.6 CSS px): 12 pt labels allow 60% of the natural size, 10 pt 72%,
    9 pt 80% (1229 px for the widest figure, 16 in = 1536 px; Gradio's page is 1248 px
    wide in a 1280-1535 px window). In a narrower frame the figure scrolls sideways.
    `alt` replaces the description (the comparison's figure says what it compares)."""
    if alt is None:
        alt = (f"Line diagram: {measure_label(view.measure)}" if view.measure == "rollout" else
               f"Line diagram: {measure_label(view.measure)} at layer {view.layer}, {head_label(view.head)}")
    b64 = base64.b64encode(svg.data).decode("ascii")
    natural = svg.width_px
    smallest = natural * max(0.6, LEGIBLE_PT / svg.label_pt)
    return (
        f'<div class="attn-figure" style="overflow-x:auto"><img alt="{escape(alt, quote=True)}" '
        f'src="data:image/svg+xml;base64,{b64}" '
        f'style="width:100%;max-width:{natural:.0f}px;min-width:{smallest:.0f}px;height:auto"></div>'
    )
