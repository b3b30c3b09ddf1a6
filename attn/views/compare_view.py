"""Two prompts compared in one view: A's and B's line diagrams stacked with their tokens in
aligned columns, the difference of their weights token by token, and what each predicts.

Both analyses are drawn with the same View. An alignment pairs their tokens in order:
(i, j) indexes a.tokens and b.tokens and the two strings are equal; (i, None) is a token
only A has, (None, j) one only B has; the first pair is (0, 0), <BOS> with <BOS>. Columns
follow the alignment, so a token both prompts share sits in one column in both diagrams and
a changed word gets a column of its own, empty on the side that lacks it.

The HTML parts need no matplotlib (the page imports this module for them); only
`compare_svg` draws, with the line diagram's own pieces (attn/figures.py). Every piece of
user text in the HTML is escaped; the figure's text is XML-escaped by the SVG writer.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.labels import head_label, measure_label, visible
from attn.views.palette import CHANGED, CHANGED_FILL, MORE_IN_A, MORE_IN_B, NO_DIFFERENCE, PREDICTED
from attn.views.view import View, check_view, matrix, row

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from attn.views.drawing import Svg

Alignment = list[tuple[int | None, int | None]]

CELL_PX = 28  # the narrowest cell of the difference strip
# The comparison figure, in inches from the top: the view's title, then per prompt its
# title line, the diagram's box (as tall as the single diagram's) and room for the labels
# that stagger below it; then the legend and any notes.
TITLE_IN, SUBTITLE_IN, BOX_IN, BELOW_IN, LEGEND_IN, NOTE_IN = 0.34, 0.42, 2.376, 0.26, 0.3, 0.22


def check_alignment(a: Analysis, b: Analysis, alignment: Alignment) -> None:
    """Raise ValueError unless the alignment covers both prompts' tokens once each, in
    order, starts with <BOS> paired with <BOS>, and pairs only equal tokens."""
    if not alignment or tuple(alignment[0]) != (0, 0):
        raise ValueError("An alignment starts with (0, 0): <BOS> paired with <BOS>.")
    seen_a, seen_b = [], []
    for i, j in alignment:
        if i is None and j is None:
            raise ValueError("An alignment entry needs a token on at least one side.")
        if i is not None and j is not None and a.tokens[i] != b.tokens[j]:
            raise ValueError(f"Entry ({i}, {j}) pairs different tokens: {a.tokens[i]!r} and {b.tokens[j]!r}.")
        if i is not None:
            seen_a.append(i)
        if j is not None:
            seen_b.append(j)
    if seen_a != list(range(a.num_tokens)) or seen_b != list(range(b.num_tokens)):
        raise ValueError("An alignment lists every token of both prompts exactly once, in order.")


def aligned_weights(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's weights (the view's row) per alignment entry; 0 on the side without the token."""
    view = check_view(a, view)
    check_view(b, view)
    check_alignment(a, b, alignment)
    wa, wb = row(a, view), row(b, view)
    out_a = np.array([0.0 if i is None else float(wa[i]) for i, _ in alignment])
    out_b = np.array([0.0 if j is None else float(wb[j]) for _, j in alignment])
    return out_a, out_b


def _token(a: Analysis, b: Analysis, entry: tuple[int | None, int | None]) -> str:
    i, j = entry
    return a.tokens[i] if i is not None else b.tokens[j]


def _instead(a: Analysis, b: Analysis, alignment: Alignment) -> dict[int, str]:
    """For each one-sided entry, what the other prompt has in the same run of changes
    ("B has ' thirsty' here"), in one pass: a title per cell, never a run per cell."""
    out, k = {}, 0
    while k < len(alignment):
        if None not in alignment[k]:
            k += 1
            continue
        end = k
        while end < len(alignment) and None in alignment[end]:
            end += 1
        run = alignment[k:end]
        for side, name, tokens in ((0, "A", a.tokens), (1, "B", b.tokens)):
            have = [repr(tokens[e[side]]) for e in run if e[side] is not None]
            said = ", ".join(have[:3]) + (f" and {len(have) - 3} more" if len(have) > 3 else "")
            text = f"{name} has {said} here" if have else f"{name} has nothing here"
            for n, e in enumerate(run, start=k):
                if e[side] is None:  # this entry lacks `side`: say what `side` has instead
                    out[n] = text
        k = end
    return out


# ---- the figure -----------------------------------------------------------------------------


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

    Legibility follows the single diagram's rule (`figures.line_diagram`): every entry gets
    a column when all four label rows (each prompt's Output and Input) are legible: 9 pt or
    more, a figure at most 16 in wide, each label a quarter em clear of its neighbours in one
    row or two staggered rows; columns closer than 12 pt never fit. Otherwise 24 columns are
    kept (`compare_columns`: <BOS>, both last tokens, the changed tokens, the most attended
    on either side) with '⋯ n' under each diagram where n of its tokens are hidden;
    `max_columns` forces that reduction at any count.
    """
    from matplotlib.figure import Figure

    from attn.views.diagram import column_labels, diagram_lines, diagram_title, gap_marks, row_titles
    from attn.views.drawing import Diagram, Label
    from attn.views.fonts import em_width
    from attn.views.layout import (
        LABEL_GAP_EM, MIN_PITCH_PT, REDUCED_COLUMNS, clear_in_rows, column_layout, figure_width, label_candidates,
        max_label_chars, reduced_fontsize, stagger_step,
    )

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
    from attn.views.drawing import Label
    from attn.views.fonts import em_width

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


# ---- the difference strip -----------------------------------------------------------------------


def _what(a: Analysis, view: View) -> str:
    """What the weights are, for the caption: 'attention weights at layer 12 (mean over heads)'."""
    if view.measure == "rollout":
        return f"{measure_label(view.measure)} (all {a.num_layers} layers)"
    return f"{measure_label(view.measure)} at layer {view.layer} ({head_label(view.head)})"


def difference_html(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> str:
    """B's weight minus A's for each alignment entry (0 for the side without the token), as a
    strip of cells in alignment order: red where B gives the token more, blue where A does,
    white alike; full colour at the largest difference after <BOS> (whose sink would wash
    out the rest: its own cell may saturate). The exact values are on hover, the changed
    tokens marked in orange; long prompts scroll sideways."""
    view = check_view(a, view)
    wa, wb = aligned_weights(a, b, alignment, view)
    diff = wb - wa
    body = np.abs(diff[1:])
    scale = float(body.max()) if body.size and body.max() > 0 else 1.0
    instead = _instead(a, b, alignment)
    colours = _diverging(diff / scale)
    cells = []
    for k, entry in enumerate(alignment):
        token = _token(a, b, entry)
        only = "A" if entry[1] is None else "B" if entry[0] is None else None
        name = repr(token) + (f" (only in {only}; {instead[k]})" if only else "")
        values = (f"A {_value(wa[k], entry[0] is None)}, B {_value(wb[k], entry[1] is None)}, "
                  f"B−A {_signed(diff[k], 4)}")
        cells.append(_cell(f"{name}: {values}", token, float(diff[k]), colours[k], only))
    where = "" if view.bos == "exclude" else " (scaled without &lt;BOS&gt;, whose own cell may saturate)"
    caption = (
        f"B − A: each token's {escape(_what(a, view))} in B minus in A, in percentage points; a token only "
        f"one prompt has (<span style=\"color:{CHANGED}\">orange</span>) counts 0 in the other."
    )
    ramp = f"rgb{MORE_IN_A},rgb{NO_DIFFERENCE},rgb{MORE_IN_B}".replace(" ", "")
    legend = (
        '<div class="attn-diff-legend" style="display:flex;align-items:center;gap:6px;font-size:12px;'
        f'color:#555;margin-top:4px"><span>more in A {_signed(-scale, 2)}</span>'
        f'<span style="display:inline-block;width:120px;height:10px;background:linear-gradient(to right,{ramp})">'
        f'</span><span>{_signed(scale, 2)} more in B{where}</span>'
        f'<span style="margin-left:12px;border-bottom:3px solid {CHANGED};color:{CHANGED}">only A / only B</span>'
        "<span>a token only that prompt has</span></div>"
    )
    return (
        '<div class="attn-diff" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:4px">{caption}</div>'
        '<div style="overflow-x:auto"><div style="display:flex;width:max-content;align-items:flex-end;gap:1px">'
        f'{"".join(cells)}</div></div>{legend}</div>'
    )


def _diverging(t: np.ndarray) -> list[tuple[str, str]]:
    """(background, text colour) for each difference as a fraction of the scale: from
    near-white to blue (negative) or red (positive), full colour at ±1 and beyond."""
    t = np.clip(t, -1.0, 1.0)[:, None]
    zero = np.array(NO_DIFFERENCE, dtype=float)
    ends = np.where(t > 0, np.array(MORE_IN_B, dtype=float), np.array(MORE_IN_A, dtype=float))
    rgb = (zero + (ends - zero) * np.abs(t)).round().astype(int).tolist()
    return [(f"rgb({r},{g},{b})", "#fff" if abs(x) > 0.55 else "#222") for (r, g, b), x in zip(rgb, t[:, 0])]


def _cell(tip: str, token: str, diff: float, colour: tuple[str, str], only: str | None) -> str:
    """One entry: the token on its colour over the difference in percentage points; a
    changed token has a tag above ('only A') and an orange underline. Lean markup: a
    2048-token prompt has 2048 cells."""
    background, ink = colour
    points = round(100 * diff)
    shown = "0" if points == 0 else _signed(points, 0)
    tag = mark = ""
    if only:
        tag = f'<div style="font-size:9px;color:{CHANGED}">only {only}</div>'
        mark = f";box-shadow:inset 0 -3px 0 {CHANGED}"
    kind = f"attn-diff-only-{only.lower()}" if only else "attn-diff-shared"
    return (
        f'<div class="attn-diff-cell {kind}" data-delta="{diff:.6f}" title="{escape(tip, quote=True)}" '
        f'style="min-width:{CELL_PX}px;text-align:center">{tag}'
        f'<div style="background:{background};color:{ink};padding:2px 3px 4px;font-size:12px;white-space:pre{mark}">'
        f'{escape(visible(token, 10))}<br><span style="font-size:10px">{shown}</span></div></div>'
    )


def _value(weight: float, absent: bool) -> str:
    return "0 (absent)" if absent else f"{weight:.4f}"


def _signed(x: float, digits: int) -> str:
    """+0.19 / −0.19, with a real minus sign."""
    return f"{x:+.{digits}f}".replace("-", "−")


# ---- the two predictions --------------------------------------------------------------------------


def cross_html(a: Analysis, b: Analysis, p_b_of_a_next: float | None, p_a_of_b_next: float | None) -> str:
    """What each prompt predicts and what the other gives that token, so that "the changed
    word moved the prediction" is a number. `p_b_of_a_next` is B's probability of A's next
    token, `p_a_of_b_next` A's of B's; None is said as "not known"."""
    name_a, name_b = escape(repr(a.next_token)), escape(repr(b.next_token))
    own_a, own_b = _own_probability(a), _own_probability(b)
    if a.next_token_id == b.next_token_id:
        text = f"A and B both predict {name_a}: A gives it {_p(own_a)}, B {_p(own_b)}."
    else:
        text = (f"A predicts {name_a} ({_p(own_a)}); B predicts {name_b} ({_p(own_b)}). "
                f"B gives {name_a} {_p(p_b_of_a_next)}; A gives {name_b} {_p(p_a_of_b_next)}.")
    return (f'<div class="attn-cross" style="font-family:ui-sans-serif,system-ui,sans-serif;font-size:14px;'
            f'margin:4px 0">{text}</div>')


def _own_probability(analysis: Analysis) -> float | None:
    """The probability the model gives its own prediction, where the analysis has it."""
    for t in analysis.top_k:
        if t.id == analysis.next_token_id:
            return t.prob
    return analysis.logit_lens[-1].p_next if analysis.logit_lens else None


def _p(p: float | None) -> str:
    """A probability as a percentage readable at any size (41%, 3%, 0.4%, 0.04%), bold, the
    exact value on hover; None as "not known"."""
    if p is None:
        return "<i>not known</i>"
    p = float(p)
    shown = (f"{p:.0%}" if p >= 0.01 else f"{100 * p:.1f}%" if p >= 0.001 else
             f"{100 * p:.2f}%" if p >= 0.0001 else "&lt;0.01%")
    return f'<b title="{p:.6f}" style="color:{PREDICTED}">{shown}</b>'


# ---- on the page ------------------------------------------------------------------------------------


def compare_svg(a: Analysis, b: Analysis, alignment: Alignment, view: View, *,
                max_columns: int | None = None) -> Svg:
    """`compare_diagram` as SVG, with its natural width and its labels' size."""
    from attn.views.drawing import figure_svg

    return figure_svg(compare_diagram(a, b, alignment, view, max_columns=max_columns))


def compare_html(svg: Svg, view: View) -> str:
    """The comparison figure as an <img>, under the single diagram's legibility floor."""
    from attn.views.diagram import line_diagram_html

    what = (measure_label(view.measure) if view.measure == "rollout" else
            f"{measure_label(view.measure)} at layer {view.layer}, {head_label(view.head)}")
    return line_diagram_html(svg, view, alt=f"Two line diagrams, prompt A over prompt B, shared tokens in "
                                            f"the same columns: {what}")
