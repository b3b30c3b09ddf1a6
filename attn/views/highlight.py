"""The highlighted-token HTML view: the prompt shaded by the attention the predicted
token pays each of its tokens. Every piece of user text is escaped; nothing a user
typed can become markup. Tokens a generation step wrote itself (not typed) are
underlined, dotted purple, and say so on hover.

Each token carries its weight for assistive technology too (`data-percent`, which the
page's stylesheet reads out after the token, unseen: attn/web/layout.py), its text is
black or white, whichever reads better on its shade, and the strip is one stop of the
keyboard's tab order whose arrow keys step through the tokens (attn/web/popups.py)."""

from __future__ import annotations

from html import escape

from attn.compute.analysis import Analysis
from attn.compute.profiles import sentences_of
from attn.views.labels import head_label
from attn.views.palette import BLUE_RGB, GENERATED, PREDICTED, PREDICTED_FILL, SENTENCE, ink_on, over_white
from attn.views.view import View, check_view, first_generated, row

SHADE = BLUE_RGB  # the line diagram's blue
SENTENCE_MARK = (f"display:inline-block;width:0;height:1.2em;vertical-align:middle;border-left:3px solid {SENTENCE};"
                 "margin:0 3px")
GENERATED_STYLE = (f"font-style:italic;text-decoration:underline dotted {GENERATED};"
                   "text-decoration-thickness:2px;text-underline-offset:3px")


def _attr(text: str) -> str:
    return escape(text, quote=True)


def _token_text(token: str) -> str:
    """Escaped token text; newlines stay line breaks (white-space: pre-wrap), marked ↵."""
    out = escape(token, quote=True).replace("\n", "↵\n").replace("\t", "⇥\t")
    return "".join(ch if ord(ch) >= 32 or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in out)


def token_html(analysis: Analysis, view: View) -> str:
    """A self-contained HTML fragment (inline styles only, so it survives any page)."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    body = weights[1:]
    scale = float(body.max()) if body.size and body.max() > 0 else 1.0
    parts = []
    bos_w = float(weights[0])
    bos_note = {"gray": "", "hide": " (not drawn)", "exclude": " (excluded; others renormalised)"}[view.bos]
    parts.append(
        f'<span class="attn-tok attn-bos" data-pos="0" data-weight="{bos_w:.6f}" '
        f'title="{_attr(f"<BOS> (attention sink), position 0, weight {bos_w:.4f}{bos_note}")}" '
        'style="border:1px dashed #888;color:#666;background:#eee;border-radius:3px;'
        f'padding:0 3px;margin-right:4px;font-style:italic">&lt;BOS&gt; {bos_w:.0%}</span>'
    )
    generated_from = first_generated(analysis)
    sentences = sentences_of(analysis)[0]
    ends = {end: k + 1 for k, (_, end) in enumerate(sentences[:-1])}  # position after a sentence -> its number
    for pos in range(1, analysis.num_tokens):
        if pos in ends:
            parts.append(f'<span class="attn-sent" title="end of sentence {ends[pos]}" style="{SENTENCE_MARK}"></span>')
        w = float(weights[pos])
        alpha = min(1.0, w / scale) if scale > 0 else 0.0
        start, stop = analysis.spans[pos]
        text = analysis.prompt[start:stop] or analysis.tokens[pos]
        shade = over_white(SHADE, alpha)  # opaque: the text's contrast holds on any page
        fg = ink_on(shade)
        generated = pos >= generated_from
        kind, mark = (" attn-gen", f";{GENERATED_STYLE}") if generated else ("", "")
        tip = f"{analysis.tokens[pos]!r}, position {pos}{', generated' if generated else ''}, weight {w:.4f} ({w:.1%})"
        parts.append(
            f'<span class="attn-tok{kind}" data-pos="{pos}" data-weight="{w:.6f}" title="{_attr(tip)}" '
            f'data-percent="{100 * w:.1f}" style="background:rgb({shade[0]},{shade[1]},{shade[2]});color:{fg};'
            f'border-radius:3px{mark}">{_token_text(text)}</span>'
        )
    parts.append(
        f'<span class="attn-pred" title="{_attr(f"predicted next token: {analysis.next_token!r}")}" '
        f'style="border:2px solid {PREDICTED};background:{PREDICTED_FILL};color:{PREDICTED};font-weight:bold;'
        f'border-radius:3px;padding:0 2px;margin-left:2px">{_token_text(analysis.next_token)}</span>'
    )
    if view.measure == "rollout":
        where = f"Attention rollout (all {analysis.num_layers} layers)"
    else:
        where = f"Layer {view.layer}, {escape(analysis.layer_kind(view.layer))}, {escape(head_label(view.head))}"
        if view.measure == "value":
            where = f"Value-weighted attention, {where[0].lower()}{where[1:]}"
    verb = {"raw": "attends to", "value": "takes from", "rollout": "traces back to"}[view.measure]
    unit = "word" if analysis.words else "token"
    caption = (
        f"{where}: how much the position predicting <b>{escape(repr(analysis.next_token))}</b> {verb} "
        f"each {unit}. Hover a {unit}, or step through them with the arrow keys, for its exact weight "
        "(Esc hides it)."
    )
    group = '<span style="display:inline-flex;align-items:center;gap:6px;white-space:nowrap">'
    legend = (  # three groups that wrap as wholes on a narrow screen
        '<div class="attn-legend" style="display:flex;flex-wrap:wrap;align-items:center;column-gap:18px;'
        'row-gap:4px;font-size:12px;color:#555;margin-top:6px">'
        f'{group}<span>0</span><span style="display:inline-block;width:120px;height:10px;'
        f'background:linear-gradient(to right,rgba({SHADE[0]},{SHADE[1]},{SHADE[2]},0),'
        f'rgb({SHADE[0]},{SHADE[1]},{SHADE[2]}));border:1px solid #ccc"></span>'
        f"<span>{scale:.3f} (strongest non-BOS {unit})</span></span>"
        f'{group}<span style="border:1px dashed #888;background:#eee;padding:0 3px">&lt;BOS&gt;</span>'
        "<span>attention sink, shown apart</span></span>"
        f'{group}<span style="border:2px solid {PREDICTED};background:{PREDICTED_FILL};padding:0 3px">next</span>'
        "<span>predicted token</span></span>"
    )
    if len(sentences) > 1:
        legend += (f'{group}<span style="{SENTENCE_MARK}"></span><span>end of a sentence '
                   f"({len(sentences)} sentences)</span></span>")
    if generated_from < analysis.num_tokens:
        legend += (f'{group}<span style="{GENERATED_STYLE}">generated</span>'
                   f"<span>written by the model in earlier steps, not typed</span></span>")
    legend += "</div>"
    return (
        '<div class="attn-html" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:6px">{caption}</div>'
        f'<div class="attn-tokens attn-scroll attn-roving" tabindex="0" role="group" aria-label="Highlighted {unit}s, '
        f'each with its weight" style="white-space:pre-wrap;line-height:1.9;font-size:16px;'
        f'max-height:420px;overflow-y:auto;color:#111">{"".join(parts)}</div>{legend}</div>'
    )
