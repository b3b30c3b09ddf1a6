"""The sentence strip: for a prompt of several sentences, each layer's share of attention per
sentence (attn/compute/profiles.py `sentence_share`: the predicting position, mean over heads,
<BOS> left out and the rest renormalised), as a layers x sentences grid to sit beside the
all-layers heatmap. It answers the lab's "are the important tokens all from the same
sentence?" for every layer at once. Escaped HTML; a screen reader reads it as a table.
"""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.analysis import Analysis
from attn.compute.profiles import sentences_of
from attn.views.labels import visible
from attn.views.palette import GLOBAL_LAYER, SENTENCE, on_ramp
from attn.views.profile_grid import CURRENT
from attn.views.view import View

ROW_PX = 16  # the heatmap's row height
MAX_COLUMNS = 12  # beyond, the earliest sentences share one column (a 2048-token prompt may hold 150)


def sentence_text(analysis: Analysis, start: int, end: int, limit: int = 60) -> str:
    """A sentence's text from its tokens' spans, cut to `limit` characters."""
    text = analysis.prompt[analysis.spans[start][0]:analysis.spans[end - 1][1]].strip()
    text = text or "".join(analysis.tokens[start:end]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sentence_strip_html(analysis: Analysis, view: View | None = None) -> str:
    """The strip, with the view's layer framed; one line of text for a one-sentence prompt."""
    sentences, share = sentences_of(analysis)
    if len(sentences) < 2:
        return ('<div class="attn-sentences attn-hint" style="font-size:13px">One sentence: per-sentence shares '
                "appear for a prompt of several sentences (cut after every token ending in . ! or ?).</div>")
    layer = None if view is None or view.measure == "rollout" else view.layer
    names = [f"S{k + 1}" for k in range(len(sentences))]
    texts = [sentence_text(analysis, a, b) for a, b in sentences]
    if len(sentences) > MAX_COLUMNS:  # the earliest together, then the last ones one by one
        cut = len(sentences) - (MAX_COLUMNS - 1)
        share = np.concatenate([np.nansum(share[:, :cut], axis=1, keepdims=True), share[:, cut:]], axis=1)
        names = [f"S1–S{cut}"] + names[cut:]
        texts = [f"the first {cut} sentences, together"] + texts[cut:]
    header = "".join(
        f'<th scope="col" title="{escape(t, quote=True)}" style="font-size:11px;color:{SENTENCE};padding:0 2px">'
        f"{n}</th>" for n, t in zip(names, texts))
    rows = []
    for i in range(analysis.num_layers):
        is_global = analysis.layer_types[i] == "global"
        mark = f"font-weight:bold;color:{GLOBAL_LAYER};" if is_global else "color:#333;"
        frame = f"outline:2px solid {CURRENT};outline-offset:-2px;" if i == layer else ""
        cells = []
        for k, value in enumerate(share[i]):
            v = float(value)
            background, ink = on_ramp(v if np.isfinite(v) else 0.0)
            text = "–" if not np.isfinite(v) else f"{v * 100:.0f}"
            tip = (f"layer {i}: {v:.0%} of the attention without <BOS> on {names[k]}" if np.isfinite(v)
                   else f"layer {i}: all attention on <BOS>")
            cells.append(f'<td title="{escape(tip, quote=True)}" style="width:34px;height:{ROW_PX}px;padding:0;'
                         f'text-align:center;font-size:10px;background:rgb{background};color:{ink}">{text}</td>')
        rows.append(f'<tr style="{frame}"><th scope="row" style="font-size:11px;text-align:right;padding-right:4px;'
                    f'font-weight:normal;{mark}">{i} {"G" if is_global else "L"}</th>{"".join(cells)}</tr>')
    legend = "".join(f"<div><b style=\"color:{SENTENCE}\">{n}</b> {escape(visible(t, 60))}</div>"
                     for n, t in zip(names, texts))
    return (
        '<div class="attn-sentences" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        '<div style="font-size:13px;color:#333;margin-bottom:4px"><b>Per sentence</b>: the share (%) of the '
        "predicting position's attention, mean over heads, that each sentence gets once &lt;BOS&gt; is left "
        "out.</div>"
        '<table style="border-collapse:collapse"><caption style="position:absolute;left:-9999px">Attention share '
        "per sentence, per layer</caption>"
        f'<thead><tr><th scope="col" style="font-size:11px;font-weight:normal">layer</th>{header}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>'
        f'<div style="font-size:11px;color:#333;margin-top:4px">{legend}</div></div>'
    )
