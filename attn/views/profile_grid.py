"""The layer-profile grid: layers x heads, one cell per head, for a chosen profile
(attn/compute/profiles.py): how much the head parks on <BOS>, how much it reads the previous
token, how spread its attention is (entropy).

Each cell is a real <button> (keyboard and screen reader; the grid is one tab stop and the
arrow keys move between its cells, so Tab passes it in one press) carrying its layer and head
(`data-layer`, `data-head`) and its one-line reading as its label ("layer 3, head 1: 63% on
the previous token"), shown on hover or focus; the page turns a press into a choice of that
layer and head in every view. Global layers are marked as in the heatmap. Escaped HTML.
"""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.analysis import Analysis
from attn.compute.profiles import PROFILE_KINDS
from attn.views.palette import GLOBAL_LAYER, on_ramp
from attn.views.view import View

PROFILE_NAMES = {"bos": "<BOS> share", "previous": "previous token", "entropy": "entropy"}
PROFILE_HELP = {
    "bos": "how much of each position's attention a head parks on <BOS>, the attention sink "
           "(mean over positions 1..T−1)",
    "previous": "how much each position gives the token just before it (mean over positions 2..T−1): "
                "a previous-token head is near 100%",
    "entropy": "how spread each position's attention is, in nats (mean over positions): 0 = all on one "
               "token, larger = spread over many",
}
CURRENT = "#e8710a"  # the heatmap's current-layer frame
CELL_W, CELL_H = 46, 20


def reading(kind: str, layer: int, head: int, value: float) -> str:
    """One cell's line: 'layer 3, head 1: 63% on the previous token'."""
    where = f"layer {layer}, head {head}"
    if np.isnan(value):
        return f"{where}: no value (the prompt has one token, so no position has a previous prompt token)"
    if kind == "bos":
        return f"{where}: {value:.0%} on <BOS>"
    if kind == "previous":
        return f"{where}: {value:.0%} on the previous token"
    return f"{where}: entropy {value:.2f} nats"


def _cell_text(kind: str, value: float) -> str:
    if np.isnan(value):
        return "–"
    return f"{value:.2f}" if kind == "entropy" else f"{value * 100:.0f}"


def profile_grid_html(analysis: Analysis, kind: str, view: View | None = None) -> str:
    """The grid for one profile ('bos', 'previous' or 'entropy'), the view's layer and head
    framed (a whole row for a head mode)."""
    if kind not in PROFILE_KINDS:
        kind = "bos"
    if analysis.profiles is None:
        return ('<div class="attn-profiles attn-hint">Head profiles come from an analysis of a typed prompt: a '
                "continuation's steps keep one row of attention each. Predict one token (N = 1) to see them.</div>")
    values = analysis.profiles.of(kind)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if kind == "entropy" and finite.size and finite.max() > 0 else 1.0
    layer = None if view is None or view.measure == "rollout" else view.layer
    head = view.head if view is not None else None
    # One tab stop for the whole grid (arrow keys move between cells): the chosen cell's.
    stop = (layer or 0, head if isinstance(head, int) else 0)
    heads = range(analysis.num_heads)
    header = "".join(f'<th scope="col" style="font-weight:normal;font-size:11px;padding:0 2px">head {h}</th>'
                     for h in heads)
    rows = []
    for i in range(analysis.num_layers):
        is_global = analysis.layer_types[i] == "global"
        mark = f"font-weight:bold;color:{GLOBAL_LAYER}" if is_global else "color:#333"
        cells = []
        for h in heads:
            v = float(values[i, h])
            background, ink = on_ramp(v / top if np.isfinite(v) else 0.0)
            chosen = i == layer and (head == h or not isinstance(head, int))
            frame = f"outline:2px solid {CURRENT};outline-offset:-2px;" if chosen else ""
            label = escape(reading(kind, i, h, v), quote=True)
            cells.append(
                f'<td style="padding:0"><button type="button" class="attn-pcell" data-layer="{i}" data-head="{h}" '
                f'aria-label="{label}" title="{label}"{" aria-current=true" if chosen else ""} '
                f'tabindex="{0 if (i, h) == stop else -1}" '
                f'style="width:{CELL_W}px;height:{CELL_H}px;border:1px solid #fff;border-radius:2px;padding:0;'
                f"font-size:11px;cursor:pointer;background:rgb{background};color:{ink};{frame}\">"
                f"{_cell_text(kind, v)}</button></td>"
            )
        name = f'{i} {"G" if is_global else "L"}'
        kind_name = "global" if is_global else "local"
        rows.append(f'<tr><th scope="row" title="layer {i}, {kind_name}" style="font-size:11px;text-align:right;'
                    f'padding-right:4px;{mark}">{name}</th>{"".join(cells)}</tr>')
    unit = "nats" if kind == "entropy" else "% (cells show percent)"
    current = ""
    if layer is not None and isinstance(head, int):
        current = reading(kind, layer, head, float(values[layer, head]))
    elif layer is not None:
        current = f"layer {layer}: mean over heads {_mean_text(kind, values[layer])}"
    pieces = " Counted over the model's tokens (pieces), not words." if analysis.words else ""
    return (
        '<div class="attn-profiles" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:4px"><b>{escape(PROFILE_NAMES[kind])}</b>: '
        f"{escape(PROFILE_HELP[kind])}; in {unit}. Darker = more. "
        f'<b style="color:{GLOBAL_LAYER}">G</b> = global layer, L = local. Press a cell to show that layer '
        f"and head in every view; the arrow keys move between cells.{pieces}</div>"
        f'<table style="border-collapse:collapse"><caption style="position:absolute;left:-9999px">'
        f"{escape(PROFILE_NAMES[kind])} per layer (rows) and head (columns)</caption>"
        f'<thead><tr><th scope="col" style="font-size:11px;font-weight:normal">layer</th>{header}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>'
        f'<div class="attn-pread" aria-live="polite" style="font-size:13px;color:#333;margin-top:4px;'
        f'min-height:1.4em">{escape(current)}</div></div>'
    )


def _mean_text(kind: str, row: np.ndarray) -> str:
    finite = row[np.isfinite(row)]
    if not finite.size:
        return "no value"
    value = float(finite.mean())
    return f"{value:.2f} nats" if kind == "entropy" else f"{value:.0%}"
