""""What the numbers say": the lesson's paragraphs, computed from what is on screen.

Each reading is a function of the `Screen` (the drawn analysis, the view, and the comparison
or ablation when there is one) and returns escaped HTML. Nothing is canned: every token,
layer and percentage comes from the analysis, so another prompt gives another paragraph.
The readings say what the model on screen does (the bundled 270M is not the lab's 1B).
The single-prompt readings live here; the two-prompt and ablation ones in readings_pair.py.
Definitions: docs/lessons.md#definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from html import escape

import numpy as np

from attn.compute.ablation import Ablation
from attn.compute.analysis import Analysis
from attn.compute.compare import Comparison
from attn.compute.profiles import sentences_of, uniform_entropy
from attn.views.labels import head_label
from attn.views.view import View, check_view, overview

NEAR = 3  # "nearby": the predicting token and the two before it (step 6)


@dataclass(frozen=True)
class Screen:
    """What the page shows when a reading is asked for."""

    analysis: Analysis  # the drawn analysis (prompt A's in a comparison; merged with words)
    view: View
    comparison: Comparison | None = None
    ablation: Ablation | None = None  # of the drawn prompt, when it was computed


# ---- small shared pieces ---------------------------------------------------------------------


def tok(text: str) -> str:
    """A token as the paragraphs quote it: repr, escaped, bold."""
    return f"<b>{escape(repr(text))}</b>"


def pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x:.1%}"


def layer_list(layers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0–2, 5 and 7–8'."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    parts = [p for r in runs for p in ([f"{r[0]}–{r[-1]}"] if len(r) > 2 else map(str, r))]
    return and_list(parts)


def and_list(items: list[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def per_layer(analysis: Analysis, view: View) -> np.ndarray:
    """(layers, T): the predicting position's weights at every layer in the view's head mode
    and measure (raw attention for rollout, which has one row), <BOS> kept."""
    measure = "raw" if view.measure == "rollout" else view.measure
    return overview(analysis, replace(view, bos="gray", measure=measure))


def what(view: View) -> str:
    measure = "value-weighted attention" if view.measure == "value" else "attention"
    return f"{measure}, {head_label(view.head)}"


def top_non_bos(weights: np.ndarray) -> np.ndarray:
    """(layers,) the index of each layer's most attended token after <BOS>."""
    return np.argmax(weights[:, 1:], axis=1) + 1


def non_bos_shares(weights: np.ndarray) -> np.ndarray:
    """(layers, T): each layer's row with <BOS> left out and the rest renormalised."""
    rest = weights[:, 1:].sum(axis=1, keepdims=True)
    out = np.zeros_like(weights, dtype=np.float64)
    np.divide(weights, rest, out=out, where=rest > 0)
    out[:, 0] = 0.0
    return out


def said_by(analysis: Analysis) -> str:
    return (f'<p class="attn-model-note" style="font-size:12px;color:#444">Computed from {escape(analysis.model)} '
            f"on the prompt on screen. The lab's figures came from Gemma 3 1B: its layers do not line up with "
            f"these, so read this model's numbers, not the lab's.</p>")


# ---- step 1: which tokens, and how that changes with depth ------------------------------------


def depth(screen: Screen) -> str:
    a, view = screen.analysis, check_view(screen.analysis, screen.view)
    weights = per_layer(a, view)
    shares = non_bos_shares(weights)
    tops = top_non_bos(weights)
    order: dict[int, list[int]] = {}
    for layer, t in enumerate(tops.tolist()):
        order.setdefault(t, []).append(layer)
    leans = "; ".join(f"{tok(a.tokens[t])} at layer{'s' if len(ls) > 1 else ''} {layer_list(ls)}"
                      for t, ls in sorted(order.items(), key=lambda kv: -len(kv[1]))[:4])
    changes = int(np.count_nonzero(tops[1:] != tops[:-1]))
    same = ("the same token leads at every layer" if changes == 0 else
            f"the leading token changes {changes} time{'s' if changes != 1 else ''} on the way up")
    layer = view.layer if view.measure != "rollout" else int(np.argmax(shares[np.arange(len(tops)), tops]))
    t = int(tops[layer])
    verdict = ("so the model attends to different tokens in different layers" if changes else
               "so at the top of the ranking the layers agree")
    text = (f"<p>{escape(a.model)} predicts {tok(a.next_token)} ({pct(a.top_k[0].prob)}). Leaving out &lt;BOS&gt; "
            f"({escape(what(view))}), the prediction leans most on {leans}: {same} through the {a.num_layers} "
            f"layers, {verdict}. At layer {layer}, {tok(a.tokens[t])} "
            f"gets {pct(shares[layer, t])} of the attention that does not go to &lt;BOS&gt;.</p>")
    return text + focus(a, view)


def focus(a: Analysis, view: View) -> str:
    """The most focused and most spread layers, by the entropy profile."""
    if a.profiles is None:
        return ""
    head = view.head if isinstance(view.head, int) else None
    ent = a.profiles.entropy[:, head] if head is not None else a.profiles.entropy.mean(axis=1)
    low, high = int(np.argmin(ent)), int(np.argmax(ent))
    whose = f"head {head}" if head is not None else "mean over heads"
    return (f"<p>Over every position of the prompt ({whose}), attention is most focused at layer {low} "
            f"(entropy {ent[low]:.2f} nats) and most spread at layer {high} ({ent[high]:.2f} nats); "
            f"spread evenly over every earlier token, it would be {uniform_entropy(a.pieces or a.num_tokens):.2f}. "
            "Low entropy often means a head parked on &lt;BOS&gt; or on the previous token.</p>")


# ---- step 4: attention per sentence -------------------------------------------------------------


def sentences(screen: Screen) -> str:
    a, view = screen.analysis, check_view(screen.analysis, screen.view)
    ranges, share = sentences_of(a)
    if len(ranges) < 2:
        return ("<p>This prompt is one sentence (no token ends in . ! or ?), so every non-&lt;BOS&gt; weight "
                "stays in it. Add a sentence before it to see how far back the model reads.</p>")
    layer = view.layer if view.measure != "rollout" else a.num_layers - 1
    earlier = np.nansum(share[:, :-1], axis=1)
    n = len(ranges) - 1
    parts = ", ".join(f"S{k + 1} {pct(float(share[layer, k]))}" for k in range(len(ranges)))
    which = "the earlier sentence" if n == 1 else f"the {n} earlier sentences"
    most, least = int(np.nanargmax(earlier)), int(np.nanargmin(earlier))
    weights = per_layer(a, View(layer=layer, head=view.head, measure=view.measure if view.measure != "rollout"
                                else "raw"))[layer]
    top = [int(i) for i in np.argsort(-weights[1:], kind="stable")[:5] + 1]
    home = [next(k for k, (s, e) in enumerate(ranges) if s <= i < e) + 1 for i in top]
    tops = ", ".join(f"{tok(a.tokens[i])} (S{k})" for i, k in zip(top, home))
    verdict = (f"all from sentence {home[0]}" if len(set(home)) == 1 else
               f"from sentences {and_list([str(k) for k in sorted(set(home))])}")
    return (f"<p>At layer {layer}, {pct(float(earlier[layer]))} of the attention, leaving out &lt;BOS&gt;, goes to "
            f"{which} ({parts}; mean over heads). The five most attended tokens there ({escape(what(view))}) "
            f"are {tops}: {verdict}. Earlier sentences get the most at layer {most} ({pct(float(earlier[most]))}) "
            f"and the least at layer {least} ({pct(float(earlier[least]))}).</p>")


# ---- step 6: nearby tokens versus far back ------------------------------------------------------


def reach(a: Analysis, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layers,) the share of non-<BOS> attention on the NEAR last tokens, and the far token
    (more than NEAR back) each layer attends to most."""
    shares = non_bos_shares(weights)
    n = a.num_tokens
    near = shares[:, max(1, n - NEAR):].sum(axis=1)
    far_end = max(1, n - NEAR)
    far_top = (np.argmax(shares[:, 1:far_end], axis=1) + 1) if far_end > 1 else np.zeros(len(shares), int)
    return near, far_top


def local_far(screen: Screen) -> str:
    a, view = screen.analysis, check_view(screen.analysis, screen.view)
    if a.num_tokens <= NEAR + 1:
        return (f"<p>The prompt has {a.num_tokens - 1} tokens: every one is within {NEAR} of the prediction, so "
                "nothing is far back. Try a longer prompt.</p>")
    raw = per_layer(a, replace(view, measure="raw"))
    near, far_top = reach(a, raw)
    local = [int(i) for i in np.argsort(-near, kind="stable")[:3]]
    far = [int(i) for i in np.argsort(near, kind="stable")[:3]]
    prev = ""
    if a.profiles is not None:
        p = a.profiles.previous.mean(axis=1)
        if np.isfinite(p).any():
            best = int(np.nanargmax(p))
            prev = (f" Across the whole prompt, layer {best} has the strongest previous-token habit: its heads give "
                    f"the token just before each position {pct(float(p[best]))} on average.")
    local_text = (and_list([f"{i} ({pct(float(near[i]))})" for i in local]) +
                  f" of their attention on the last {NEAR} tokens")
    far_text = and_list([f"{i} ({pct(1 - float(near[i]))} further back, most on {tok(a.tokens[int(far_top[i])])})"
                         for i in far])
    check = _checks(a, view, near)
    return (f"<p>Leaving out &lt;BOS&gt; (mean over heads), the layers that stay nearby are {local_text}: the "
            f"pattern of local, grammar-like work (agreement, the next word of a phrase).{prev} The layers that "
            f"reach furthest back are {far_text}: candidates for meaning, if the tokens they reach are content "
            f"words.</p>{check}")


def _checks(a: Analysis, view: View, near: np.ndarray) -> str:
    """The honest part: attention is not explanation, and the other measures are one click away."""
    layer = view.layer if view.measure != "rollout" else int(np.argmin(near))
    value = ""
    if a.value_norms is not None:
        v_near, _ = reach(a, per_layer(a, View(layer=layer, head="mean", measure="value")))
        value = (f" At layer {layer}, weighting each token by how far its value moves the output (the "
                 f"<i>Value-weighted</i> measure) puts {pct(float(v_near[layer]))} nearby instead of "
                 f"{pct(float(near[layer]))}.")
    return ("<p><b>A heuristic, not a finding.</b> Nearby versus far is a rule of thumb about where attention "
            "goes; it does not show what a layer computes, and attention weights are not an explanation of the "
            f"prediction.{value} <i>Check by removing tokens</i> measures what each token is actually worth to "
            "the prediction.</p>")


# ---- step 7: your own prompt ----------------------------------------------------------------------


def overview_reading(screen: Screen) -> str:
    a = screen.analysis
    text = depth(screen)
    if len(sentences_of(a)[0]) > 1:
        text += sentences(screen)
    if a.num_tokens > NEAR + 1:
        near, _ = reach(a, per_layer(a, replace(check_view(a, screen.view), measure="raw")))
        text += (f"<p>The most local layer is {int(np.argmax(near))} ({pct(float(near.max()))} on the last {NEAR} "
                 f"tokens); the one reaching furthest back is {int(np.argmin(near))} "
                 f"({pct(1 - float(near.min()))} further back).</p>")
    return text
