"""A view: which measure, layer, head mode and BOS mode to draw from an Analysis.

`check_view` is the one rule for a valid view, used by the page, deep links and the API;
it needs only the model's shape (num_layers, num_heads), so a link can be checked against
the model's spec before any analysis exists. The rest is pure numpy over cached numbers,
which is what makes moving a slider free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from attn.compute.analysis import Analysis
from attn.errors import ViewError, echo
from attn.views.labels import measure_label

HEAD_MODES = ("mean", "max")
BOS_MODES = ("gray", "hide", "exclude")
MEASURES = ("raw", "value", "rollout")
BOS_MODE_HELP = {
    "gray": "BOS lines drawn gray (as in the lab)",
    "hide": "BOS not drawn (weights unchanged)",
    "exclude": "BOS removed, other weights renormalised to sum to 1",
}


@dataclass(frozen=True)
class View:
    layer: int
    head: str | int = "mean"  # "mean", "max" or a head index
    bos: str = "gray"
    show_all: bool = False
    measure: str = "raw"  # one of MEASURES


def parse_head(value) -> str | int:
    """'mean' | 'max' | head index, from UI strings ('Head 2', '2') or ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in HEAD_MODES:
        return text
    if text.startswith("mean"):
        return "mean"
    if text.startswith("max"):
        return "max"
    text = text.removeprefix("head").strip()
    if text.lstrip("-").isdigit():
        return int(text)
    raise ViewError(f"Head must be 'mean', 'max' or a head number, not {echo(value)}.")


class Shape(Protocol):
    """What a view is checked against: an Analysis, or a model's spec before any analysis."""

    num_layers: int
    num_heads: int


def check_layer(model: Shape, layer) -> int:
    """A layer index this model has. Raises ViewError."""
    try:
        index = int(layer)
        if isinstance(layer, float) and layer != index:
            raise ValueError("not a whole number")
    except (TypeError, ValueError, OverflowError):
        raise ViewError(f"Layer must be a whole number, not {echo(layer)}.") from None
    if not 0 <= index < model.num_layers:
        raise ViewError(f"Layer {index} is out of range: this model has layers 0-{model.num_layers - 1}.")
    return index


def check_head(model: Shape, head) -> str | int:
    """'mean', 'max' or a head index this model has. Raises ViewError."""
    head = parse_head(head)
    if isinstance(head, int) and not 0 <= head < model.num_heads:
        raise ViewError(f"Head {head} is out of range: this model has heads 0-{model.num_heads - 1}.")
    return head


def check_bos(bos) -> str:
    if bos not in BOS_MODES:
        raise ViewError(f"BOS mode must be one of {', '.join(BOS_MODES)}.")
    return bos


def check_measure(measure) -> str:
    if measure not in MEASURES:
        raise ViewError(f"Measure must be one of {', '.join(MEASURES)}, not {echo(measure)}.")
    return measure


def check_view(model: Shape, view: View) -> View:
    """Validate a view against this model (ranges come from the model, not a constant)."""
    measure = check_measure(view.measure)
    if isinstance(model, Analysis) and measure not in available_measures(model):
        raise ViewError(f"{measure_label(measure).capitalize()} is not available for {model.model}.")
    return View(layer=check_layer(model, view.layer), head=check_head(model, view.head), bos=check_bos(view.bos),
                show_all=bool(view.show_all), measure=measure)


def nearest_layer(model: Shape, layer: int) -> int:
    """The layer itself, or the nearest one this model has."""
    return min(max(int(layer), 0), model.num_layers - 1)


def fit_controls(model: Shape, layer, head) -> tuple[int, str | int]:
    """The layer and head controls kept where they are when the model allows it: a layer
    it lacks moves to the nearest one (none yet: the last), a head it lacks becomes the mean."""
    layer = model.num_layers - 1 if layer is None else nearest_layer(model, layer)
    try:
        head = check_head(model, "mean" if head is None else head)
    except ViewError:
        head = "mean"
    return layer, head


# ---- the head control's choices ("Mean over heads", "Head 2"); parse_head reads them back
HEAD_CHOICES_BASE = ["Mean over heads", "Max over heads"]


def head_choices(num_heads: int) -> list[str]:
    return HEAD_CHOICES_BASE + [f"Head {i}" for i in range(num_heads)]


def head_choice(head) -> str:
    head = parse_head(head)
    return {"mean": HEAD_CHOICES_BASE[0], "max": HEAD_CHOICES_BASE[1]}.get(head, f"Head {head}")


def _combine_heads(stack: np.ndarray, head: str | int) -> np.ndarray:
    """stack: (heads, ...) -> (...)."""
    if head == "mean":
        return stack.mean(axis=0)
    if head == "max":
        return stack.max(axis=0)
    return stack[head]


def _apply_bos(weights: np.ndarray, bos: str) -> np.ndarray:
    """For 'exclude', drop BOS (key 0) and renormalise each row over the rest."""
    if bos != "exclude":
        return weights
    out = np.array(weights, dtype=np.float32, copy=True)
    out[..., 0] = 0.0
    total = out.sum(axis=-1, keepdims=True)
    np.divide(out, total, out=out, where=total > 0)
    return out


def available_measures(analysis: Analysis) -> list[str]:
    """The measures this analysis carries (a family without value projections lacks one)."""
    have = {"raw": True, "value": analysis.value_norms is not None, "rollout": analysis.rollout is not None}
    return [m for m in MEASURES if have[m]]


def first_generated(analysis: Analysis) -> int:
    """The index of the first token a generation step drew from its own earlier output:
    past the last for a typed prompt."""
    return analysis.num_tokens if analysis.generated_from is None else analysis.generated_from


def _per_head(analysis: Analysis, measure: str) -> np.ndarray:
    """(layers, heads, T): each head's row in this measure, every row summing to 1
    (value-weighted norms become shares of their row, as the views draw them)."""
    if measure == "raw":
        return analysis.last_row
    norms = analysis.value_norms
    total = norms.sum(axis=-1, keepdims=True)
    return np.divide(norms, total, out=np.zeros_like(norms), where=total > 0)


def row(analysis: Analysis, view: View) -> np.ndarray:
    """(T,) weights the predicting (last) position gives each input token, in the view's
    measure. Rollout already combines every layer and head: the same row at every layer."""
    view = check_view(analysis, view)
    if view.measure == "rollout":
        return _apply_bos(analysis.rollout, view.bos)
    return _apply_bos(_combine_heads(_per_head(analysis, view.measure)[view.layer], view.head), view.bos)


def matrix(analysis: Analysis, view: View) -> np.ndarray | None:
    """(T, T) raw weights for every position, or None when the prompt is too long to keep
    them or the view's measure is not raw attention (the measures are kept for the
    predicting position only)."""
    view = check_view(analysis, view)
    if analysis.full is None or view.measure != "raw":
        return None
    stack = analysis.full[view.layer].astype(np.float32)
    return _apply_bos(_combine_heads(stack, view.head), view.bos)


def overview(analysis: Analysis, view: View) -> np.ndarray:
    """(layers, T): the last position's weights at every layer, in the view's measure and
    head and BOS modes, for the heatmap; (1, T) for rollout, which is one row for all."""
    view = check_view(analysis, view)
    if view.measure == "rollout":
        return _apply_bos(analysis.rollout[None], view.bos)
    per_head = _per_head(analysis, view.measure)
    per_layer = np.stack([_combine_heads(per_head[i], view.head) for i in range(analysis.num_layers)])
    return _apply_bos(per_layer, view.bos)


def strongest(weights: np.ndarray, k: int, skip_bos: bool = True) -> list[tuple[int, float]]:
    """The k most-attended positions as (index, weight), strongest first."""
    idx = np.argsort(-weights, kind="stable")
    if skip_bos:
        idx = idx[idx != 0]
    return [(int(i), float(weights[i])) for i in idx[:k]]


def view_json(analysis: Analysis, view: View) -> dict:
    """The weights one view shows, as the API's /view returns them (docs/api.md)."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    return {
        "model": analysis.model,
        "layer": view.layer,
        "layer_type": analysis.layer_types[view.layer],
        "head": view.head,
        "bos": view.bos,
        "measure": view.measure,
        "tokens": analysis.tokens,
        "weights": [round(float(w), 6) for w in weights],
        "next_token": analysis.next_token,
    }
