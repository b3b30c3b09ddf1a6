"""The lab's line diagram, in matplotlib.

The line diagram keeps the lab's look (Output row over Input row, one blue line per
weight, width proportional to weight, BOS lines gray) but scales: beyond `max_columns`
tokens it shows the most-attended ones in prompt order, marks hidden runs with "⋯",
and says how many are hidden. Figures are built on `Figure` directly (no pyplot global
state), so concurrent requests never share a canvas.
"""

from __future__ import annotations

import io
import logging
import warnings

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from .analysis import Analysis
from .weights import View, check_view, head_label, matrix, row

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

BLUE = "#1f5fbf"
GRAY = "#b8b8b8"
PREDICTED = "#0a7d32"
MIN_WIDTH, MAX_WIDTH = 0.0, 5.0  # the lab's line thickness range
MAX_LABEL_CHARS = 12


def visible(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A token as a label: whitespace and control characters made visible, long ones cut."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("⏎")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        elif ch in "\u200b\u200c\u200d\u2060\ufeff":
            out.append("·")
        else:
            out.append(ch)
    s = "".join(out)
    if s.strip() == "":
        s = "␣" * max(1, min(len(s), 3))
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def layer_kind(analysis: Analysis, layer: int) -> str:
    """'global', or 'local (sliding window 512)'."""
    kind = analysis.layer_types[layer]
    if kind == "local" and analysis.sliding_window:
        return f"local (sliding window {analysis.sliding_window})"
    return kind


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


def line_diagram(analysis: Analysis, view: View, *, max_columns: int = 24) -> Figure:
    """The lab's figure for one layer and head mode."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    n = analysis.num_tokens
    notes = []
    mat = matrix(analysis, view) if view.show_all else None
    if view.show_all and mat is None:
        notes.append("All-pairs mode is drawn for prompts up to 128 tokens; showing the last row.")
    cols = _columns(weights, max_columns)
    xs, gaps = _layout(cols)
    if len(cols) < n:
        share = float(weights[cols].sum() / max(weights.sum(), 1e-12))
        notes.append(
            f"Showing {len(cols)} of {n} tokens: <BOS>, the last, and the most attended "
            f"({share:.0%} of this row's weight). ⋯ marks hidden tokens."
        )

    title = (
        f"Attention Weights for Layer {view.layer} · {layer_kind(analysis, view.layer)} · "
        f"{head_label(view.head)}"
    )
    # Wide enough for the columns and for the title (12 pt: about 0.095 in per character).
    width = float(np.clip(max(0.62 * (xs[-1] + 1) + 1.0, 0.095 * len(title) + 0.4), 6.0, 16.0))
    fig = Figure(figsize=(width, 3.6 + 0.25 * len(notes)), dpi=100)
    left = 0.95 / width  # room for the row titles, whatever the width
    ax = fig.add_axes((left, 0.12 + 0.05 * len(notes), 0.99 - left, 0.66))
    ax.set_xlim(-0.7, xs[-1] + 0.7)
    ax.set_ylim(-0.25, 1.25)
    ax.axis("off")
    fontsize = 12 if len(cols) <= 16 else 10 if len(cols) <= 24 else 9
    label_chars = MAX_LABEL_CHARS if len(cols) <= 16 else 9

    last = n - 1
    segments, widths, colors = [], [], []
    pairs = (
        [(i, j) for i in cols for j in cols if j <= i]
        if mat is not None
        else [(last, j) for j in cols]
    )
    col_x = dict(zip(cols, xs))
    for i, j in pairs:
        w = float(mat[i, j]) if mat is not None else float(weights[j])
        if w <= 0 or (j == 0 and view.bos == "hide"):
            continue
        segments.append([(col_x[i], 1.0), (col_x[j], 0.0)])
        widths.append(MIN_WIDTH + w * (MAX_WIDTH - MIN_WIDTH))
        colors.append(GRAY if j == 0 else BLUE)
    if segments:
        ax.add_collection(LineCollection(segments, linewidths=widths, colors=colors, alpha=0.7))

    text = dict(ha="center", fontsize=fontsize, parse_math=False)
    for c, x in zip(cols, xs):
        out = analysis.next_token if c == last else analysis.tokens[c + 1]
        is_pred = c == last
        ax.text(
            x, 1.07, visible(out, label_chars), va="bottom",
            color=PREDICTED if is_pred else "black", fontweight="bold" if is_pred else "normal",
            bbox=dict(boxstyle="round,pad=0.2", fc="#e6f4ea", ec=PREDICTED) if is_pred else None,
            **text,
        )
        bos = c == 0
        ax.text(
            x, -0.07, visible(analysis.tokens[c], label_chars), va="top",
            color="#777777" if bos else "black", fontstyle="italic" if bos else "normal", **text,
        )
    for x, hidden in gaps:
        ax.text(x - 0.2, -0.07, "⋯", ha="center", va="top", fontsize=9, color="#888888")
        ax.text(x - 0.2, -0.2, str(hidden), ha="center", va="top", fontsize=6, color="#888888")
    fig.text(0.005, 0.12 + 0.05 * len(notes) + 0.66 * (1.07 + 0.25) / 1.5, "Output:",
             fontsize=12, fontweight="bold", va="bottom")
    fig.text(0.005, 0.12 + 0.05 * len(notes) + 0.66 * (0.25 - 0.07) / 1.5, "Input:",
             fontsize=12, fontweight="bold", va="top")
    fig.suptitle(
        f"{title}\n{analysis.model} predicts {visible(analysis.next_token, 24)!r}",
        fontsize=12, y=0.98, parse_math=False,  # a predicted '$$' is text, not mathtext
    )
    for k, note in enumerate(notes):
        fig.text(0.01, 0.02 + 0.05 * k, note, fontsize=9, color="#555555", parse_math=False)
    return fig


def to_svg(fig: Figure) -> bytes:
    """SVG with real <text> (not glyph paths): about 4x faster than PNG here, crisp at any
    zoom, and the browser's fonts cover emoji and CJK that matplotlib's fonts lack.
    Text is XML-escaped by matplotlib's SVG writer."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "attn"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="svg")
    return buf.getvalue()


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Raster export (README pictures, downloads); missing glyphs are not errors."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
