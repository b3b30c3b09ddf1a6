"""Two prompts compared in one figure: A's line diagram over B's, their tokens in aligned
columns (attn/views/alignment.py), so that a token both prompts share sits in one column in
both diagrams and a changed word gets a column of its own, empty on the side that lacks it.
Both analyses are drawn with the same View, with the single diagram's own pieces
(attn/views/diagram.py) and layout rules (attn/views/layout.py); the figure's text is
XML-escaped by the SVG writer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from matplotlib.figure import Figure

from attn.compute.analysis import Analysis
from attn.views.alignment import Alignment, aligned_weights
from attn.views.diagram import (
    column_labels,
    diagram_lines,
    diagram_title,
    gap_marks,
    line_diagram_html,
    row_titles,
)
from attn.views.drawing import Diagram, Label, Svg, figure_svg
from attn.views.fonts import em_width
from attn.views.labels import head_label, measure_label, visible
from attn.views.layout import (
    LABEL_GAP_EM,
    MIN_PITCH_PT,
    REDUCED_COLUMNS,
    clear_in_rows,
    column_layout,
    figure_width,
    label_candidates,
    max_label_chars,
    reduced_fontsize,
    stagger_step,
)
from attn.views.palette import CHANGED, CHANGED_FILL
from attn.views.view import View, check_view, matrix, row

# The comparison figure, in inches from the top: the view's title, then per prompt its
# title line, the diagram's box (as tall as the single diagram's) and room for the labels
# that stagger below it; then the legend and any notes.
TITLE_IN, SUBTITLE_IN, BOX_IN, BELOW_IN, LEGEND_IN, NOTE_IN = 0.34, 0.42, 2.376, 0.26, 0.3, 0.22


def compare_columns(alignment: Alignment, wa: np.ndarray, wb: np.ndarray, max_columns: int) -> list[int]:
    """Which alignment entries get a column when not all fit: <BOS>, both prompts' last
    tokens, the changed tokens (the most attended first, up to half the columns), then the
    most attended on either side, in alignment order."""
    n = len(alignment)
    if n <= max_columns:
        return list(range(n))
    keep = {0, _last(alignment, 0), _last(alignment, 1)}
    strongest = np.argsort(-np.maximum(wa, wb), kind="stable")
    for k in strongest:
        if len(keep) >= max(max_columns // 2, 3):
            break
        if None in alignment[k]:
            keep.add(int(k))
    for k in strongest:
        if len(keep) >= max_columns:
            break
        keep.add(int(k))
    return sorted(keep)


def _last(alignment: Alignment, side: int) -> int:
    """The entry of a prompt's last token (its predicting position)."""
    return max(k for k, e in enumerate(alignment) if e[side] is not None)


def compare_diagram(a: Analysis, b: Analysis, alignment: Alignment, view: View, *,
                    max_columns: int | None = None) -> Figure:
    """A's line diagram over B's, in one figure, one column per alignment entry.

    Legibility follows the single diagram's rule (`diagram.line_diagram`): every entry gets
    a column when all four label rows (each prompt's Output and Input) are legible: 9 pt or
    more, a figure at most 16 in wide, each label a quarter em clear of its neighbours in one
    row or two staggered rows; columns closer than 12 pt never fit. Otherwise 24 columns are
    kept (`compare_columns`: <BOS>, both last tokens, the changed tokens, the most attended
    on either side) with '⋯ n' under each diagram where n of its tokens are hidden;
    `max_columns` forces that reduction at any count.
    """
    view = check_view(a, view)
    wa, wb = aligned_weights(a, b, alignment, view)
    sides = (a, b)
    title = diagram_title(a, view)
    subtitles = [f"{name}: {s.model} predicts {visible(s.next_token, 24)!r}" for name, s in zip("AB", sides)]
    longest = max((title, *subtitles), key=len)

    def texts(kept: list[int], chars: int, side: int) -> tuple[list[int], list[str], list[str]]:
        """(positions in `kept`, input labels, output labels) of one prompt's tokens."""
        s = sides[side]
        last = s.num_tokens - 1
        at, inputs, outputs = [], [], []
        for k, e in enumerate(kept):
            i = alignment[e][side]
            if i is not None:
                at.append(k)
                inputs.append(visible(s.tokens[i], chars))
                outputs.append(visible(s.next_token if i == last else s.tokens[i + 1], chars))
        return at, inputs, outputs

    def fits(kept: list[int]) -> tuple[float, int] | None:
        """(font size, rows) that keep every label clear, or None."""
        xs, _ = column_layout(kept)
        _, pitch = figure_width(xs, longest)
        if pitch < MIN_PITCH_PT:
            return None  # decided before reading a label: long prompts cost nothing here
        n, x = len(kept), np.asarray(xs) * pitch
        rows_of = [(n - 1 - np.arange(n)) % r for r in (1, 2)]
        label_rows = []
        for side in (0, 1):
            at, inputs, outputs = texts(kept, max_label_chars(n), side)
            last = sides[side].num_tokens - 1
            index = [alignment[kept[k]][side] for k in at]
            em_in = [em_width(t, "normal", "italic" if i == 0 else "normal") +
                     (0.4 if alignment[kept[k]][1 - side] is None else 0.0)  # a changed token's box
                     for t, i, k in zip(inputs, index, at)]
            em_out = [em_width(t, "bold" if i == last else "normal") + (0.4 if i == last else 0.0)
                      for t, i in zip(outputs, index)]
            label_rows += [(np.asarray(at), np.asarray(em_in)), (np.asarray(at), np.asarray(em_out))]
        for fontsize, rows in label_candidates(n):
            if all(clear_in_rows(x[at], fontsize * em, rows_of[rows - 1][at], fontsize * LABEL_GAP_EM)
                   for at, em in label_rows):
                return fontsize, rows
        return label_candidates(n)[-1] if n <= REDUCED_COLUMNS else None

    everything = list(range(len(alignment)))
    kept, chosen = everything, fits(everything) if max_columns is None else None
    if chosen is None:
        kept = compare_columns(alignment, wa, wb, max_columns or REDUCED_COLUMNS)
        chosen = reduced_fontsize(len(kept)), 1
    fontsize, rows = chosen
    xs, gaps = column_layout(kept)
    jumps = [(p, q) for p, q in zip(kept, kept[1:]) if q - p > 1]  # the gaps' ends, in order
    width, _ = figure_width(xs, longest)

    notes = []
    mats = [matrix(s, view) if view.show_all else None for s in sides]
    if view.show_all and any(m is None for m in mats):
        notes.append("All-pairs mode draws raw attention only; showing the predicting positions' rows."
                     if view.measure != "raw" else
                     "All-pairs mode is drawn for prompts up to 128 tokens; showing the last rows.")
    if len(kept) < len(alignment):
        shares = [float(w[kept].sum() / max(w.sum(), 1e-12)) for w in (wa, wb)]
        notes.append(f"Showing {len(kept)} of {len(alignment)} columns: <BOS>, both last tokens, the changed tokens "
                     f"and the most attended (A: {shares[0]:.0%}, B: {shares[1]:.0%} of each row's weight). "
                     "⋯ marks hidden tokens.")
    changed = any(None in e for e in alignment)

    height = TITLE_IN + 2 * (SUBTITLE_IN + BOX_IN + BELOW_IN) + LEGEND_IN + NOTE_IN * len(notes) + 0.06
    fig = Figure(figsize=(width, height), dpi=100)
    left = 0.95 / width
    step = stagger_step(fontsize, BOX_IN)
    figure_labels = [Label(0.5, 1 - 0.06 / height, title, 12, va="top", on_figure=True)]
    top = height - TITLE_IN
    for side, s in enumerate(sides):
        box_top = top - SUBTITLE_IN
        bottom = (box_top - BOX_IN) / height
        figure_labels.append(Label(0.5, (top - 0.02) / height, subtitles[side], 12, va="top", weight="bold",
                                   on_figure=True))
        at, inputs, outputs = texts(kept, max_label_chars(len(kept)), side)
        last = s.num_tokens - 1
        col_x = {alignment[kept[k]][side]: xs[k] for k in at}
        segments, widths, colors = diagram_lines(row(s, view), mats[side], view, list(col_x), col_x, last)
        labels = []
        for k, inp, out in zip(at, inputs, outputs):
            i = alignment[kept[k]][side]
            shift = step * ((len(kept) - 1 - k) % rows)
            above, below = column_labels(xs[k], out, inp, fontsize, shift, predicted=i == last, bos=i == 0)
            if alignment[kept[k]][1 - side] is None:  # only this prompt has the token
                below = replace(below, color=CHANGED, boxed=True, box_edge=CHANGED, box_fill=CHANGED_FILL)
            labels += [above, below]
        for (x, _), (before, after) in zip(gaps, jumps):
            hidden = sum(alignment[e][side] is not None for e in range(before + 1, after))
            if hidden:  # '⋯ n': n of this prompt's tokens are hidden here
                labels.extend(gap_marks(x, hidden))
        labels.extend(row_titles(bottom, BOX_IN / height))
        if side == 1:
            labels += figure_labels + _legend(changed, notes, width, height)
        fig.add_artist(Diagram(
            box=(left, bottom, 0.99 - left, BOX_IN / height), xlim=(-0.7, xs[-1] + 0.7), ylim=(-0.25, 1.25),
            segments=segments, widths=widths, colors=colors, labels=labels, label_pt=fontsize,
        ))
        top = box_top - BOX_IN - BELOW_IN
    return fig


def _legend(changed: bool, notes: list[str], width: float, height: float) -> list:
    """The legend line (a sample of the orange box and what it means) over the notes, bottom
    left; laid out in inches, placed in figure fractions."""
    grey = dict(size=9, ha="left", color="#555555", on_figure=True)
    out = [Label(0.1 / width, (0.06 + NOTE_IN * k) / height, note, **grey) for k, note in enumerate(reversed(notes))]
    y = (0.1 + NOTE_IN * len(notes)) / height
    if not changed:
        return out + [Label(0.1 / width, y, "A and B have the same tokens: each column is one token of both.", **grey)]
    sample = "token"
    sample_in = em_width(sample) * 9 / 72
    meaning = "only this prompt has the token (changed or inserted). Shared tokens line up in one column."
    return out + [
        Label((0.12 + sample_in / 2) / width, y, sample, 9, color=CHANGED, boxed=True, box_edge=CHANGED,
              box_fill=CHANGED_FILL, on_figure=True),
        Label((0.12 + sample_in + 0.1) / width, y, meaning, **grey),
    ]


def compare_svg(a: Analysis, b: Analysis, alignment: Alignment, view: View, *,
                max_columns: int | None = None) -> Svg:
    """`compare_diagram` as SVG, with its natural width and its labels' size."""
    return figure_svg(compare_diagram(a, b, alignment, view, max_columns=max_columns))


def compare_html(svg: Svg, view: View, *, alt: str | None = None) -> str:
    """The comparison figure as an <img>, under the single diagram's legibility floor; `alt`
    is `describe.compare_alt` (the predictions and the most attended), when given."""
    if alt is None:
        what = (measure_label(view.measure) if view.measure == "rollout" else
                f"{measure_label(view.measure)} at layer {view.layer}, {head_label(view.head)}")
        alt = f"Two line diagrams, prompt A over prompt B, shared tokens in the same columns: {what}"
    return line_diagram_html(svg, view, alt=alt)
