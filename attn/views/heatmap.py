"""The all-layers overview: a layers x tokens heatmap of the predicting position's attention
(in the view's measure), with the logit-lens strip beside its rows.

It answers "which layers look where" and "which layer decides" at a glance. Built as HTML, not matplotlib: a few
milliseconds instead of ~150 ms, exact weights on hover, and the browser's fonts. Past
`CELL_LIMIT` tokens the cells become an image (one pixel per cell, scaled up by CSS)
so a 2048-token prompt stays a small page. A generation step's own earlier tokens (not
typed) have purple italic ticks.
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.labels import head_label, measure_label, visible
from attn.views.palette import (
    GENERATED,
    GLOBAL_LAYER,
    HEATMAP_GRAY_HIGH,
    HEATMAP_GRAY_LOW,
    HEATMAP_HIGH,
    HEATMAP_LOW,
    PREDICTED,
)
from attn.views.view import View, check_view, first_generated, overview

CELL_LIMIT = 160
ROW_PX = 16
LENS_BAR_PX = 56
LOW = np.array(HEATMAP_LOW, dtype=np.float32)
HIGH = np.array(HEATMAP_HIGH, dtype=np.float32)
GRAY_LOW = np.array(HEATMAP_GRAY_LOW, dtype=np.float32)
GRAY_HIGH = np.array(HEATMAP_GRAY_HIGH, dtype=np.float32)


def _colours(data: np.ndarray, bos_mode: str) -> np.ndarray:
    """(layers, T, 3) uint8. Scaled without BOS, whose weight would wash out the rest."""
    body = data[:, 1:]
    vmax = float(body.max()) if body.size and body.max() > 0 else 1.0
    t = np.clip(data / vmax, 0.0, 1.0)[..., None]
    rgb = LOW + (HIGH - LOW) * t
    if bos_mode != "exclude":
        g = np.clip(data[:, :1], 0.0, 1.0)[..., None]
        rgb[:, :1] = GRAY_LOW + (GRAY_HIGH - GRAY_LOW) * g
    return rgb.round().astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def heatmap_html(analysis: Analysis, view: View, *, grid: str | None = None) -> str:
    """The overview with the view's layer marked. `grid` is `heatmap_grid(analysis, view)`,
    the costly part, the same for every layer: a caller may cache it."""
    view = check_view(analysis, view)
    data = overview(analysis, view)
    if grid is None:
        grid = heatmap_grid(analysis, view)
    rollout = view.measure == "rollout"
    current = None if rollout else view.layer
    if rollout:  # one row for all layers
        labels = [_row_label("all", "font-weight:bold;color:#444;", None)]
    else:
        labels = [_layer_label(analysis, i, current) for i in range(analysis.num_layers)]
    marker = ""
    if current is not None:
        marker = (
            f'<div class="attn-hm-current" style="position:absolute;left:0;top:{current * ROW_PX}px;'
            f'width:{_grid_width(analysis.num_tokens)};height:{ROW_PX}px;box-sizing:border-box;'
            'border:2px solid #e8710a;pointer-events:none"></div>'
        )
    cells = analysis.num_tokens <= CELL_LIMIT
    fit = "width:max-content" if cells else ""  # cells scroll, the image fits
    grow = 0 if cells else 1  # the lens strip sits right after the cells
    strongest = np.argsort(-data[:, 1:].mean(axis=0), kind="stable")[:8] + 1
    top = ", ".join(f"{escape(repr(visible(analysis.tokens[i], 20)))} ({data[:, i].mean():.2f})" for i in strongest)
    bos_note = "" if view.bos == "exclude" else " The gray first column is &lt;BOS&gt; (gray scale of its own)."
    what = escape(measure_label(view.measure))
    unit = "word" if analysis.words else "token"
    if rollout:
        intro = (f"Attention rollout: one row, every layer and head combined; darker = more of the position "
                 f"that predicts {escape(repr(analysis.next_token))} traces back to that {unit}.")
    else:
        intro = (f"Every layer at once ({what}, {escape(head_label(view.head))}): each row is a layer, each "
                 f"column a prompt {unit}; darker = more from the position that predicts "
                 f"{escape(repr(analysis.next_token))}. <b style=\"color:{GLOBAL_LAYER}\">G</b> = global layer, "
                 "L = local (sliding window).")
    if first_generated(analysis) < analysis.num_tokens:
        intro += (f' <i style="color:{GENERATED}">Purple italic</i>: {unit}s the model generated in earlier '
                  "steps (not typed).")
    lens = _lens_column(analysis, current) if analysis.logit_lens else ""
    lens_note = ""
    if lens:
        lens_note = (f" Right: the <b>logit lens</b>, each layer's own guess (its top token) and the green bar "
                     f"for P({escape(repr(analysis.next_token))}) at that layer.")
    rows = (
        '<div style="display:flex;align-items:flex-start">'
        f'<div style="flex:0 0 auto">{"".join(labels)}</div>'
        f'<div class="attn-scroll" tabindex="0" role="group" aria-label="Heatmap" '
        f'style="flex:{grow} 1 auto;overflow-x:auto;min-width:0"><div style="position:relative;{fit}">'
        f"{marker}{grid}</div></div>"
        + ("" if rollout else lens)
        + "</div>"
    )
    if rollout and lens:  # the lens has a row per layer: beside a one-row heatmap it stands alone
        rows += (
            '<div style="display:flex;align-items:flex-start;margin-top:8px">'
            f'<div style="flex:0 0 auto">{"".join(_layer_label(analysis, i, None) for i in range(analysis.num_layers))}'
            f"</div>{lens}</div>"
        )
    return (
        f'<div class="attn-heatmap attn-measure-{view.measure}" '
        'style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:4px">{intro}{bos_note}{lens_note}</div>'
        f"{rows}"
        f'<div style="font-size:12px;color:#555;margin-top:4px">Most attended on average over layers: {top}.</div>'
        "</div>"
    )


def _row_label(text: str, style: str, layer: int | None) -> str:
    data = "" if layer is None else f' data-layer="{layer}"'
    return (
        f'<div class="attn-hm-layer"{data} style="height:{ROW_PX}px;line-height:{ROW_PX}px;'
        f'font-size:11px;padding-right:4px;text-align:right;{style}">{text}</div>'
    )


def _layer_label(analysis: Analysis, i: int, current: int | None) -> str:
    kind = analysis.layer_types[i]
    style = f"font-weight:bold;color:{GLOBAL_LAYER};" if kind == "global" else "color:#444;"
    if i == current:
        style += "background:#fde7d4;"
    return _row_label(f'{i} {"G" if kind == "global" else "L"}', style, i)


def _lens_column(analysis: Analysis, current: int | None) -> str:
    """One row per layer: a bar for P(final next token) at that layer, then the layer's top
    token (green when it already is the final prediction)."""
    out = []
    for i, g in enumerate(analysis.logit_lens):
        tip = (f"layer {i}: top token {g.token!r} ({g.prob:.3f}); "
               f"P({analysis.next_token!r}) = {g.p_next:.4f}")
        mine = g.id == analysis.next_token_id
        colour = f"color:{PREDICTED};font-weight:bold;" if mine else "color:#333;"
        mark = "background:#fde7d4;" if i == current else ""
        bar = max(0.0, min(1.0, float(g.p_next))) * LENS_BAR_PX
        out.append(
            f'<div class="attn-lens" data-layer="{i}" data-p-next="{g.p_next:.6f}" title="{escape(tip, quote=True)}" '
            f'style="display:flex;align-items:center;gap:4px;height:{ROW_PX}px;font-size:11px;{mark}">'
            f'<span style="flex:0 0 {LENS_BAR_PX}px;height:9px;background:#eef2ee">'
            f'<span style="display:block;height:9px;width:{bar:.1f}px;background:{PREDICTED}"></span></span>'
            f'<span style="white-space:pre;{colour}">{escape(visible(g.token, 10))}</span></div>'
        )
    return f'<div class="attn-lens-strip" style="flex:0 0 9.5em;padding-left:6px">{"".join(out)}</div>'


def heatmap_grid(analysis: Analysis, view: View) -> str:
    """The cells (or, past CELL_LIMIT tokens, the image) and the token ticks."""
    view = check_view(analysis, view)
    data = overview(analysis, view)
    rgb = _colours(data, view.bos)
    if data.shape[1] <= CELL_LIMIT:
        return _cell_grid(analysis, data, rgb, view.measure)
    return _image_grid(rgb, data.shape[0], analysis)


def _cell_width(n: int) -> int:
    return max(12, min(40, 900 // max(n, 1)))


def _grid_width(n: int) -> str:
    return f"{n * _cell_width(n)}px" if n <= CELL_LIMIT else "100%"


def _cell_grid(analysis: Analysis, data: np.ndarray, rgb: np.ndarray, measure: str) -> str:
    n_layers, n = data.shape
    cell_w = _cell_width(n)
    gen = first_generated(analysis)
    names = [escape(repr(t), quote=True) for t in analysis.tokens]
    notes = [f"#{j}, generated" if j >= gen else f"#{j}" for j in range(n)]
    tick = ["color:#333"] * gen + [f"color:{GENERATED};font-style:italic"] * (n - gen)
    colours, values = rgb.tolist(), data.tolist()
    row_names = ["rollout"] if measure == "rollout" else [f"layer {i}" for i in range(n_layers)]
    rows = []
    for layer in range(n_layers):
        cells = "".join(
            f'<i title="{row_names[layer]}, {names[j]} ({notes[j]}): {values[layer][j]:.4f}" '
            f'style="display:inline-block;width:{cell_w}px;height:{ROW_PX}px;background:rgb({r},{g},{b})"></i>'
            for j, (r, g, b) in enumerate(colours[layer])
        )
        rows.append(f'<div style="white-space:nowrap;width:max-content;height:{ROW_PX}px;font-size:0">{cells}</div>')
    ticks = "".join(
        f'<span style="display:inline-block;width:{cell_w}px;height:90px;position:relative">'
        f'<span style="position:absolute;left:{cell_w // 2}px;top:2px;transform:rotate(60deg);'
        f'transform-origin:0 0;white-space:pre;font-size:11px;{tick[j]}">{escape(visible(analysis.tokens[j], 12))}'
        "</span></span>"
        for j in range(n)
    )
    return f'{"".join(rows)}<div style="white-space:nowrap;font-size:0">{ticks}</div>'


def _image_grid(rgb: np.ndarray, n_layers: int, analysis: Analysis) -> str:
    b64 = base64.b64encode(_png(rgb)).decode("ascii")
    n, gen = rgb.shape[1], first_generated(analysis)
    units = "words" if analysis.words else "tokens"
    generated = ""
    if gen < n:
        generated = f' <span style="color:{GENERATED};font-style:italic">The last {n - gen} were generated.</span>'
    return (
        f'<img alt="attention heatmap, {n_layers} layers by {n} {units}" '
        f'src="data:image/png;base64,{b64}" style="width:100%;height:{n_layers * ROW_PX}px;'
        'image-rendering:pixelated;display:block">'
        f'<div style="font-size:11px;color:#666">{n} {units}, left to right; '
        f"too many to label, so the most attended are listed below.{generated}</div>"
    )
