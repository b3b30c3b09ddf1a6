"""The figures' text alternatives: what a screen reader says instead of the picture.

A picture of lines is worth nothing to a student who cannot see it, so its alternative
carries the data a sighted student reads off it first: which view it is (layer, head mode,
measure), what the model predicts, and the three tokens the prediction attends to most,
with their weights. Every token of the view is in the "Show as table" table
(attn/views/tables.py) and in the highlighted tokens.
"""

from __future__ import annotations

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.alignment import Alignment
from attn.views.labels import head_label, measure_label, visible
from attn.views.view import View, check_view, matrix, row

TOP = 3  # the tokens an alternative names


def said(token: str) -> str:
    """A token as a sentence names it: “thirsty” (control characters and blanks made visible)."""
    shown = visible(token, 24)
    return f"“{shown.strip() or shown}”"


def most_attended(weights: np.ndarray, k: int = TOP) -> list[int]:
    """The k positions after <BOS> with the most weight, the most first (ties: the earlier)."""
    order = np.argsort(-weights[1:], kind="stable")[:k] + 1
    return [int(j) for j in order]


def view_name(analysis: Analysis, view: View) -> str:
    """'attention weights at layer 12 (local, sliding window 512), mean over heads'."""
    if view.measure == "rollout":
        return f"attention rollout through all {analysis.num_layers} layers, mean over heads"
    return (f"{measure_label(view.measure)} at layer {view.layer} ({analysis.layer_kind(view.layer)}), "
            f"{head_label(view.head)}")


def attention_sentence(analysis: Analysis, view: View, weights: np.ndarray) -> str:
    """'Most attended: “thirsty” 0.179, “for” 0.052, “looking” 0.040; <BOS> (the attention
    sink) 0.676.' The weights are the view's, rounded to 3 decimals."""
    unit = "words" if analysis.words else "tokens"
    top = most_attended(weights)
    if not top:
        return f"The prompt has no {unit} after <BOS>."
    named = ", ".join(f"{said(analysis.tokens[j])} {weights[j]:.3f}" for j in top)
    text = f"Most attended {unit}: {named}"
    if view.bos != "exclude":
        hidden = " (not drawn)" if view.bos == "hide" else ""
        text += f"; <BOS>, the attention sink{hidden}, {float(weights[0]):.3f}"
    return text + "."


def diagram_alt(analysis: Analysis, view: View) -> str:
    """The line diagram's alternative: the view, the prediction, the three most attended."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    text = (f"Line diagram of {view_name(analysis, view)}. {analysis.model} predicts {said(analysis.next_token)}. "
            f"{attention_sentence(analysis, view, weights)}")
    if view.show_all and matrix(analysis, view) is not None:
        text += " Every position's weights are drawn; the numbers are those of the position that predicts."
    return text + " Show as table lists every token."


def compare_alt(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> str:
    """The comparison figure's alternative: the view, then each prompt's prediction and its
    three most attended tokens, and how many tokens only one prompt has."""
    view = check_view(a, view)
    changed = sum(None in entry for entry in alignment)
    parts = [f"Two line diagrams, prompt A over prompt B, shared tokens in the same columns: "
             f"{view_name(a, view)}."]
    for name, side in (("A", a), ("B", b)):
        parts.append(f"{name}: {side.model} predicts {said(side.next_token)}. "
                     f"{attention_sentence(side, view, row(side, view))}")
    parts.append(f"{changed} tokens are in one prompt only." if changed else "A and B have the same tokens.")
    return " ".join(parts) + " Show as table lists every token."
