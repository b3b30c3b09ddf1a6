"""Token ablation on the page: one column per prompt token with the attention it got in the
current view (gray, up) over what deleting it did to the prediction (orange: the
prediction lost probability; blue: it gained; the signed change in percentage points under
each, so the colour is never the only sign), and one sentence comparing the two rankings.
Columns hold their own labels, so the bars stay under their tokens at any length. Every
piece of user text is escaped."""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.ablation import MOST_ATTENDED, Ablation, agreement
from attn.compute.analysis import Analysis
from attn.views.labels import head_label, measure_label, visible
from attn.views.palette import ATTENTION_BAR, FELL, ROSE
from attn.views.view import View, check_view, row

BAR_PX = 36


def ablation_html(ablated: Ablation, analysis: Analysis, view: View) -> str:
    """`analysis` is the ablated prompt's analysis; `view` picks the attention compared."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    shown = [d.index for d in ablated.deletions]
    top_w = max((float(weights[j]) for j in shown), default=0.0) or 1.0
    top_d = max((abs(d.delta) for d in ablated.deletions), default=0.0) or 1.0
    nxt = escape(repr(ablated.next_token))
    cols = []
    for d in ablated.deletions:
        w = float(weights[d.index])
        up = min(1.0, w / top_w) * BAR_PX
        down = min(1.0, abs(d.delta) / top_d) * BAR_PX
        colour = FELL if d.delta < 0 else ROSE
        tip = (f"{d.token!r} (#{d.index}): weight {w:.4f}; without it P({ablated.next_token!r}) = "
               f"{d.p_next:.4f} ({d.delta:+.4f})")
        bar_down = f'<span style="display:block;width:14px;height:{down:.1f}px;background:{colour}"></span>'
        cols.append(
            f'<div class="attn-abl-col" data-pos="{d.index}" data-delta="{d.delta:.6f}" '
            f'title="{escape(tip, quote=True)}" style="display:flex;flex-direction:column;align-items:center;'
            'min-width:26px;padding:0 2px">'
            f'<div style="height:{BAR_PX}px;display:flex;align-items:flex-end">'
            f'<span style="display:block;width:14px;height:{up:.1f}px;background:{ATTENTION_BAR}"></span></div>'
            f'<div style="font-size:12px;white-space:pre;border-top:1px solid #999;border-bottom:1px solid #999;'
            f'padding:1px 0">{escape(visible(d.token, 10))}</div>'
            f'<div style="height:{BAR_PX}px">{bar_down}</div>'
            f'<div style="font-size:11px;color:#444">{_points(d.delta)}</div></div>'
        )
    scope = "" if ablated.exhaustive else (
        f" The prompt is {len(ablated.tokens)} tokens long: only the {MOST_ATTENDED} most attended (mean over "
        "layers and heads) were removed, in prompt order."
    )
    caption = (
        f"Removing each token in turn (the rest kept, <code>&lt;BOS&gt;</code> always): with every token, "
        f"P({nxt}) = {ablated.p_next:.1%}. Under each token, how much it changes without the token, in "
        f"percentage points: <b style=\"color:{FELL}\">orange, −</b> where it falls; "
        f"<b style=\"color:{ROSE}\">blue, +</b> where it rises. <b style=\"color:{ATTENTION_BAR}\">Gray</b>, "
        f"above: the {escape(_what(analysis, view))} the token gets."
        f"{scope}"
    )
    return (
        '<div class="attn-ablation" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:6px">{caption}</div>'
        '<div class="attn-scroll attn-roving" tabindex="0" role="group" aria-label="Removing each token: the '
        'arrow keys step through them" style="overflow-x:auto">'
        '<div style="display:flex;width:max-content;align-items:flex-start">'
        f'{"".join(cols)}</div></div>'
        '<div class="attn-agreement" style="font-size:14px;margin-top:6px">'
        f"{agreement_text(ablated, weights, analysis, view)}</div></div>"
    )


def _points(delta: float) -> str:
    """A change in percentage points with its sign, a real minus: '−20', '+3', '0'."""
    points = round(100 * delta)
    return "0" if points == 0 else f"{points:+d}".replace("-", "−")


def _what(analysis: Analysis, view: View) -> str:
    if view.measure == "rollout":
        return f"{measure_label(view.measure)} (all {analysis.num_layers} layers)"
    return f"{measure_label(view.measure)} at layer {view.layer} ({head_label(view.head)})"


def agreement_text(ablated: Ablation, weights: np.ndarray, analysis: Analysis, view: View) -> str:
    """One sentence (HTML): do attention and deletion rank the tokens alike?"""
    a = agreement(ablated, weights)

    def names(indices: list[int]) -> str:
        return ", ".join(escape(repr(ablated.tokens[i])) for i in indices)

    drops = {d.index: -d.delta for d in ablated.deletions}
    hurt = ", ".join(f"{escape(repr(ablated.tokens[i]))} (−{drops[i]:.0%})" if drops[i] > 0
                     else f"{escape(repr(ablated.tokens[i]))} ({-drops[i]:+.0%})" for i in a.top_ablation)
    if a.spearman is None:
        verdict = "Too few tokens (or all equal) to compare the rankings."
    else:
        rho = a.spearman
        word = ("largely agree" if rho >= 0.5 else "agree weakly" if rho >= 0.2 else
                "barely relate" if rho > -0.2 else "disagree")
        verdict = (f"The {escape(_what(analysis, view))} and the effect of removing a token <b>{word}</b>: "
                   f"Spearman's ρ = {rho:+.2f} over {a.count} tokens.")
    return f"{verdict} Most attended: {names(a.top_attention)}. Removing hurts most: {hurt}."
