"""Where a line diagram's columns and labels go, decided before anything is drawn: which
token positions get a column, how wide the figure is, and the labels' font size and rows.

"Legible" is the rule: every token gets a column when its labels can be drawn at 9 pt or
more in a figure at most 16 in wide, each a quarter em clear of its neighbours, in one row
or two staggered rows; otherwise the figure keeps the most attended columns. The single
diagram (attn/views/diagram.py) and the comparison (attn/views/compare_diagram.py) both
lay out by these rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.fonts import em_width
from attn.views.labels import MAX_LABEL_CHARS, visible
from attn.views.view import first_generated

MAX_FIGURE_IN = 16.0  # the widest figure: 1536 CSS px at its natural size
REDUCED_COLUMNS = 24  # columns kept when the labels of every token cannot fit
MIN_PITCH_PT = 12.0  # columns closer than this blur their lines together, whatever the labels
LABEL_GAP_EM = 0.25  # clear space between two labels in a row, in ems of their font
ROW_STEP_EM = 1.3  # the second row of staggered labels sits this far from the first
LEGIBLE_PT = 7.2  # the smallest a label may be shown on the page: 12 pt labels at 60%


@dataclass(frozen=True)
class Plan:
    """Which columns a diagram draws and how its labels sit: positions in data units (one
    unit per column), the figure's width, the labels' font size and rows (1, or 2 staggered)."""

    cols: list[int]  # token positions, ascending
    xs: list[float]  # one x per column
    gaps: list[tuple[float, int]]  # (x, hidden count) of each '⋯' gap
    width: float  # inches
    fontsize: float
    label_chars: int
    rows: int
    inputs: list[str]  # one Input label per column
    outputs: list[str]  # one Output label per column


def kept_columns(weights: np.ndarray, max_columns: int) -> list[int]:
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


def column_layout(cols: list[int]) -> tuple[list[float], list[tuple[float, int]]]:
    """x for each kept column (indices in any sequence of columns), plus (x, hidden count)
    for each '⋯' gap between columns."""
    xs, gaps, x = [], [], 0.0
    for k, c in enumerate(cols):
        if k and c - cols[k - 1] > 1:
            gaps.append((x, c - cols[k - 1] - 1))
            x += 0.6
        xs.append(x)
        x += 1.0
    return xs, gaps


def plan_columns(analysis: Analysis, cols: list[int], title: str, *, fit: bool) -> Plan | None:
    """Lay out these columns. With `fit`, choose font size and rows so that no two labels
    touch, or return None when no legible choice exists; without (the reduced figure), one
    row at a size set by the column count, drawn whatever the labels."""
    xs, gaps = column_layout(cols)
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
    em_in = np.array([em_width(t, "normal", "italic" if c == 0 or c >= gen else "normal")
                      for t, c in zip(inputs, cols)])
    em_out = np.array([em_width(t, "bold" if c == last else "normal", "italic" if gen <= c + 1 <= last else "normal")
                       + (0.4 if c == last else 0.0)
                       for t, c in zip(outputs, cols)])  # the prediction's box pads 0.2 em a side
    candidates = label_candidates(n)
    for fontsize, rows in candidates:
        if all(_clear(x, fontsize * em, rows, fontsize * LABEL_GAP_EM) for em in (em_in, em_out)):
            return plan(fontsize, rows)
    return plan(*candidates[-1]) if n <= REDUCED_COLUMNS else None  # short prompts are never cut


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


def _clear(x: np.ndarray, widths: np.ndarray, rows: int, gap: float) -> bool:
    """Every label (centred at x, points) clears the next one in its row by `gap`; with
    two rows, columns alternate between them."""
    if len(x) <= rows:
        return True
    return bool(np.all(x[rows:] - x[:-rows] >= (widths[rows:] + widths[:-rows]) / 2 + gap))


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
