"""Choosing what to draw from an Analysis: layer, head mode and BOS mode.

Pure numpy over cached numbers; this is what makes moving a slider free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import Analysis
from .errors import ViewError, echo

HEAD_MODES = ("mean", "max")
BOS_MODES = ("gray", "hide", "exclude")
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


def check_view(analysis: Analysis, view: View) -> View:
    """Validate a view against this analysis (ranges come from the model, not a constant)."""
    try:
        layer = int(view.layer)
        if isinstance(view.layer, float) and view.layer != layer:
            raise ValueError("not a whole number")
    except (TypeError, ValueError, OverflowError):
        raise ViewError(f"Layer must be a whole number, not {echo(view.layer)}.") from None
    if not 0 <= layer < analysis.num_layers:
        raise ViewError(f"Layer {layer} is out of range: this model has layers 0-{analysis.num_layers - 1}.")
    head = parse_head(view.head)
    if isinstance(head, int) and not 0 <= head < analysis.num_heads:
        raise ViewError(f"Head {head} is out of range: this model has heads 0-{analysis.num_heads - 1}.")
    if view.bos not in BOS_MODES:
        raise ViewError(f"BOS mode must be one of {', '.join(BOS_MODES)}.")
    return View(layer=layer, head=head, bos=view.bos, show_all=bool(view.show_all))


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


def row(analysis: Analysis, view: View) -> np.ndarray:
    """(T,) weights the predicting (last) position gives each input token."""
    view = check_view(analysis, view)
    return _apply_bos(_combine_heads(analysis.last_row[view.layer], view.head), view.bos)


def matrix(analysis: Analysis, view: View) -> np.ndarray | None:
    """(T, T) weights for every position, or None when the prompt is too long to keep them."""
    view = check_view(analysis, view)
    if analysis.full is None:
        return None
    stack = analysis.full[view.layer].astype(np.float32)
    return _apply_bos(_combine_heads(stack, view.head), view.bos)


def overview(analysis: Analysis, head: str | int = "mean", bos: str = "gray") -> np.ndarray:
    """(layers, T): the last position's attention at every layer, for the heatmap."""
    check_view(analysis, View(layer=0, head=head, bos=bos))
    head = parse_head(head)
    per_layer = np.stack([_combine_heads(analysis.last_row[i], head) for i in range(analysis.num_layers)])
    return _apply_bos(per_layer, bos)


def strongest(weights: np.ndarray, k: int, skip_bos: bool = True) -> list[tuple[int, float]]:
    """The k most-attended positions as (index, weight), strongest first."""
    idx = np.argsort(-weights, kind="stable")
    if skip_bos:
        idx = idx[idx != 0]
    return [(int(i), float(weights[i])) for i in idx[:k]]
