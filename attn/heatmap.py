"""The all-layers overview: a layers x tokens heatmap of the predicting position's attention.

It answers "which layers look where" at a glance. Built as HTML, not matplotlib: a few
milliseconds instead of ~150 ms, exact weights on hover, and the browser's fonts. Past
`CELL_LIMIT` tokens the cells become an image (one pixel per cell, scaled up by CSS)
so a 2048-token prompt stays a small page.
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np

from .analysis import Analysis
from .labels import head_label, visible
from .palette import GLOBAL_LAYER, HEATMAP_GRAY_HIGH, HEATMAP_GRAY_LOW, HEATMAP_HIGH, HEATMAP_LOW
from .view import overview, parse_head

CELL_LIMIT = 160
ROW_PX = 16
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


def heatmap_html(
    analysis: Analysis, head="mean", bos: str = "gray", current_layer: int | None = None,
    *, grid: str | None = None,
) -> str:
    """The overview with `current_layer` marked. `grid` is `heatmap_grid(analysis, head,
    bos)`, the costly part, the same for every layer: a caller may cache it."""
    head = parse_head(head)
    data = overview(analysis, head, bos)
    if grid is None:
        grid = heatmap_grid(analysis, head, bos)
    labels = []
    for i, kind in enumerate(analysis.layer_types):
        style = f"font-weight:bold;color:{GLOBAL_LAYER};" if kind == "global" else "color:#444;"
        if i == current_layer:
            style += "background:#fde7d4;"
        labels.append(
            f'<div class="attn-hm-layer" data-layer="{i}" style="height:{ROW_PX}px;line-height:{ROW_PX}px;'
            f'font-size:11px;padding-right:4px;text-align:right;{style}">{i} {"G" if kind == "global" else "L"}</div>'
        )
    marker = ""
    if current_layer is not None and 0 <= current_layer < len(analysis.layer_types):
        marker = (
            f'<div class="attn-hm-current" style="position:absolute;left:0;top:{current_layer * ROW_PX}px;'
            f'width:{_grid_width(analysis.num_tokens)};height:{ROW_PX}px;box-sizing:border-box;'
            'border:2px solid #e8710a;pointer-events:none"></div>'
        )
    fit = "width:max-content" if analysis.num_tokens <= CELL_LIMIT else ""  # cells scroll, the image fits
    strongest = np.argsort(-data[:, 1:].mean(axis=0), kind="stable")[:8] + 1
    top = ", ".join(f"{escape(repr(visible(analysis.tokens[i], 20)))} ({data[:, i].mean():.2f})" for i in strongest)
    bos_note = "" if bos == "exclude" else " The gray first column is &lt;BOS&gt; (gray scale of its own)."
    return (
        '<div class="attn-heatmap" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:4px">Every layer at once ({escape(head_label(head))}): '
        "each row is a layer, each column a prompt token; darker = more attention from the position "
        f"that predicts {escape(repr(analysis.next_token))}. <b style=\"color:{GLOBAL_LAYER}\">G</b> = global layer, "
        f"L = local (sliding window).{bos_note}</div>"
        '<div style="display:flex;align-items:flex-start">'
        f'<div style="flex:0 0 auto">{"".join(labels)}</div>'
        f'<div style="flex:1 1 auto;overflow-x:auto"><div style="position:relative;{fit}">'
        f"{marker}{grid}</div></div></div>"
        f'<div style="font-size:12px;color:#555;margin-top:4px">Most attended on average over layers: {top}.</div>'
        "</div>"
    )


def heatmap_grid(analysis: Analysis, head="mean", bos: str = "gray") -> str:
    """The cells (or, past CELL_LIMIT tokens, the image) and the token ticks."""
    head = parse_head(head)
    data = overview(analysis, head, bos)
    rgb = _colours(data, bos)
    if data.shape[1] <= CELL_LIMIT:
        return _cell_grid(analysis, data, rgb)
    return _image_grid(rgb, data.shape[0])


def _cell_width(n: int) -> int:
    return max(12, min(40, 900 // max(n, 1)))


def _grid_width(n: int) -> str:
    return f"{n * _cell_width(n)}px" if n <= CELL_LIMIT else "100%"


def _cell_grid(analysis: Analysis, data: np.ndarray, rgb: np.ndarray) -> str:
    n_layers, n = data.shape
    cell_w = _cell_width(n)
    names = [escape(repr(t), quote=True) for t in analysis.tokens]
    colours, values = rgb.tolist(), data.tolist()
    rows = []
    for layer in range(n_layers):
        cells = "".join(
            f'<i title="layer {layer}, {names[j]} (#{j}): {values[layer][j]:.4f}" '
            f'style="display:inline-block;width:{cell_w}px;height:{ROW_PX}px;background:rgb({r},{g},{b})"></i>'
            for j, (r, g, b) in enumerate(colours[layer])
        )
        rows.append(f'<div style="white-space:nowrap;width:max-content;height:{ROW_PX}px;font-size:0">{cells}</div>')
    ticks = "".join(
        f'<span style="display:inline-block;width:{cell_w}px;height:90px;position:relative">'
        f'<span style="position:absolute;left:{cell_w // 2}px;top:2px;transform:rotate(60deg);'
        f'transform-origin:0 0;white-space:pre;font-size:11px;color:#333">{escape(visible(analysis.tokens[j], 12))}'
        "</span></span>"
        for j in range(n)
    )
    return f'{"".join(rows)}<div style="white-space:nowrap;font-size:0">{ticks}</div>'


def _image_grid(rgb: np.ndarray, n_layers: int) -> str:
    b64 = base64.b64encode(_png(rgb)).decode("ascii")
    return (
        f'<img alt="attention heatmap, {n_layers} layers by {rgb.shape[1]} tokens" '
        f'src="data:image/png;base64,{b64}" style="width:100%;height:{n_layers * ROW_PX}px;'
        'image-rendering:pixelated;display:block">'
        f'<div style="font-size:11px;color:#666">{rgb.shape[1]} tokens, left to right; '
        "too many to label, so the most attended are listed below.</div>"
    )
