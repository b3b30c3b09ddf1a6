"""The page's text around the views: the prediction (the prompt continued, the top-k
bars, the summary line), the layer line, the model's status and the note that says why a
request was refused. Every piece of user text is escaped."""

from __future__ import annotations

from html import escape

from attn.compute.analysis import Analysis
from attn.compute.generation import Generation
from attn.model.registry import ModelSpec
from attn.views.labels import head_label
from attn.views.palette import BLUE, PREDICTED, PREDICTED_FILL
from attn.views.view import View, check_view, row


def top_k_html(analysis: Analysis, k: int = 10) -> str:
    """The next-token distribution as a compact bar list."""
    rows = []
    for t in analysis.top_k[:k]:
        pct = max(0.0, min(1.0, t.prob))
        chosen = t.id == analysis.next_token_id
        weight = f"font-weight:bold;color:{PREDICTED};" if chosen else ""
        rows.append(
            '<div style="display:flex;align-items:center;gap:8px;line-height:1.5">'
            f'<code style="flex:0 0 9em;overflow:hidden;white-space:pre;{weight}">{escape(repr(t.token))}</code>'
            f'<span style="flex:1 1 auto;background:#eef2fa"><span style="display:block;height:9px;'
            f'background:{BLUE};width:{pct * 100:.1f}%"></span></span>'
            f'<span style="flex:0 0 4em;text-align:right">{t.prob:.1%}</span></div>'
        )
    return (
        '<div class="attn-topk" style="font-size:13px"><div style="color:#555;margin-bottom:2px">'
        f"Most likely next tokens</div>{''.join(rows)}</div>"
    )


def continuation_html(analysis: Analysis) -> str:
    """The prompt followed by the predicted token, marked."""
    tail = analysis.prompt[-400:]
    cut = "…" if len(analysis.prompt) > 400 else ""
    return (
        '<div class="attn-continuation" style="white-space:pre-wrap;font-size:16px">'
        f"{cut}{escape(tail)}<mark style=\"background:{PREDICTED_FILL};color:{PREDICTED};font-weight:bold;"
        f'border:2px solid {PREDICTED};border-radius:3px">{escape(analysis.next_token)}</mark></div>'
    )


def summary_html(analysis: Analysis) -> str:
    """The prompt continued by its prediction, then the token count, the model and its dtype."""
    return (
        f"{continuation_html(analysis)}"
        f'<div style="font-size:12px;color:#666;margin-top:4px">{analysis.num_tokens} tokens with &lt;BOS&gt; · '
        f"{analysis.model} ({analysis.dtype})</div>"
    )


def generation_html(gen: Generation, step: int) -> str:
    """The prompt continued by the generated tokens, each marked, the one step `step`
    predicts boxed; then how they were chosen."""
    tail = gen.prompt[-300:]
    cut = "…" if len(gen.prompt) > 300 else ""
    marks = []
    for k, (token, prob) in enumerate(zip(gen.generated, gen.probs)):
        style = (f"border:2px solid {PREDICTED};background:{PREDICTED_FILL};font-weight:bold;" if k == step else
                 "border:1px dotted #7a3db8;background:#f3ecfa;")
        tip = escape(f"step {k}: {token!r}, p = {prob:.3f}", quote=True)
        marks.append(f'<mark class="attn-gen-token" title="{tip}" '
                     f'style="{style}color:#222;border-radius:3px">{escape(token)}</mark>')
    how = "greedy" if gen.temperature == 0 else f"sampled at temperature {gen.temperature:g}, seed {gen.seed}"
    stop = " (stopped at the end-of-text token)" if gen.stopped_at_eos else ""
    return (
        f'<div class="attn-continuation" style="white-space:pre-wrap;font-size:16px">{cut}{escape(tail)}'
        f'{"".join(marks)}</div>'
        f'<div style="font-size:12px;color:#666;margin-top:4px">{gen.num_steps} tokens generated, {how}{stop}, '
        f"one at a time with the KV cache. Step {step} (boxed) is the one the views show: what the model "
        f"attended to when it chose {escape(repr(gen.generated[step]))}. · {gen.model} ({gen.dtype})</div>"
    )


def layer_info_md(analysis: Analysis, view: View) -> str:
    """One line of Markdown: which layer this is, what it can see, and <BOS>'s weight."""
    view = check_view(analysis, view)
    if view.measure == "rollout":
        bos = row(analysis, view)[0]
        hint = (" (choose *exclude* for `<BOS>` to see how the rest divides)"
                if view.bos != "exclude" and bos > 0.5 else "")
        return (f"**Attention rollout**: every layer and head combined (Abnar & Zuidema 2020); the layer and "
                f"head controls do not change it · `<BOS>` share {bos:.2f}{hint}")
    local = analysis.is_local(view.layer)
    return (
        f"**Layer {view.layer}** of {analysis.num_layers - 1}: **{analysis.layer_kind(view.layer)}** attention"
        + (" (sees only the last tokens)" if local else " (sees the whole prompt)")
        + f" · {head_label(view.head)}"
        + (" · value-weighted" if view.measure == "value" else "")
        + f" · `<BOS>` {'share' if view.measure == 'value' else 'weight'} {row(analysis, view)[0]:.2f}"
        + (" (outside this layer's window)" if analysis.bos_outside_window(view.layer) else "")
    )


def model_status_md(spec: ModelSpec, state: str, detail: str) -> str:
    """The model's line under the model menu, from Engine.status (state, detail)."""
    if state == "ready":
        return f"**{spec.label}**: ready ({detail})."
    if state == "error":
        return f"**{spec.label}**: unavailable. {detail}"
    if state == "loading":
        return f"**{spec.label}**: loading ({detail})…"
    return f"**{spec.label}** loads on first use. {spec.notes}"


def note_html(message: str) -> str:
    """The short line under the prompt that says why the last request was refused."""
    return f'<div class="attn-note" role="alert">{escape(message)}</div>' if message else ""
