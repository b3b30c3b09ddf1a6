"""Deep links: a page address's query
(?prompt=...&model=...&layer=...&head=...&bos=...&all=1&measure=value&words=1, plus
&compare=<prompt B> for a comparison, or &continue=N[&temperature=T&seed=S]&step=K for a
continuation)
read into a view, and a view written back as one. `embed=1` may join any of them: the compact
page a course embeds (attn/web/embed.py); it changes what is shown, never the view.

A link is checked against the model's spec, before any analysis exists, by the same rule
as every other view (attn.views.view.check_view); a value the model does not allow is replaced
by the nearest usable one, with a note saying so (the page shows the notes as toasts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from attn.compute.generation import Continuation, check_continuation
from attn.errors import ViewError, echo
from attn.model.registry import ModelSpec
from attn.views.view import View, check_bos, check_head, check_layer, check_measure, nearest_layer, parse_head


@dataclass(frozen=True)
class Link:
    prompt: str  # "" when the link has none
    model: str
    view: View
    notes: list[str] = field(default_factory=list)  # why values in the link were replaced
    compare: str = ""  # prompt B, "" when the link compares nothing
    continuation: Continuation | None = None  # None: predict one token, greedy (the lab)
    step: int = 0
    words: bool = False


def read_link(
    query: Mapping[str, str],
    *,
    specs: Mapping[str, ModelSpec],
    default_model: str,
    suggested_layer: Callable[[str], int],
) -> Link:
    """`specs`: the enabled models by name; `suggested_layer(model)`: the layer to show
    when the link names none (or names one that is not a number)."""
    notes = []
    model = query.get("model") or default_model
    if model not in specs:
        notes.append(f"Unknown model in the link ({echo(model)}); using {default_model}.")
        model = default_model
    spec = specs[model]
    layer = query.get("layer")
    try:
        layer = int(layer) if layer is not None else suggested_layer(model)
    except ValueError:
        notes.append("The link's layer is not a number; using the suggested layer.")
        layer = suggested_layer(model)
    try:
        check_layer(spec, layer)
    except ViewError:
        notes.append(f"Layer {layer} is out of range for {spec.label} (0-{spec.num_layers - 1}).")
        layer = nearest_layer(spec, layer)
    try:
        head = parse_head(query.get("head", "mean"))
        try:
            check_head(spec, head)
        except ViewError:
            raise ViewError(f"Head {head} is out of range (0-{spec.num_heads - 1}).") from None
    except ViewError as exc:
        notes.append(f"{exc} Using the mean over heads.")
        head = "mean"
    bos = query.get("bos", "gray")
    try:
        check_bos(bos)
    except ViewError:
        notes.append("Unknown BOS mode in the link; using gray.")
        bos = "gray"
    show_all = query.get("all", "0") in ("1", "true", "yes")
    measure = query.get("measure", "raw")
    try:
        check_measure(measure)
    except ViewError:
        notes.append(f"Unknown measure in the link ({echo(measure)}); showing raw attention.")
        measure = "raw"
    view = View(layer=layer, head=head, bos=bos, show_all=show_all, measure=measure)
    continuation = None
    if "continue" in query:
        try:
            continuation = check_continuation(query.get("continue"), query.get("temperature", 0),
                                              query.get("seed", 0))
        except ViewError as exc:
            notes.append(f"{exc} Predicting one token.")
        if continuation is not None and continuation.max_new_tokens == 1 and continuation.greedy:
            continuation = None  # the lab's own prediction
    try:
        step = max(0, int(query.get("step", 0)))
    except ValueError:
        notes.append("The link's step is not a number; showing the first.")
        step = 0
    return Link(query.get("prompt", ""), model, view, notes, compare=query.get("compare", ""),
                continuation=continuation, step=step, words=query.get("words", "0") in ("1", "true", "yes"))


def share_query(prompt: str, model: str, view: View, *, compare: str = "",
                continuation: Continuation | None = None, step: int = 0, words: bool = False) -> str:
    """The query that opens this view of this prompt ('?prompt=...'), a `continuation`
    shown at `step`."""
    params = {"prompt": prompt}
    if compare:
        params["compare"] = compare
    params.update({"model": model, "layer": int(view.layer), "head": parse_head(view.head)})
    if view.bos != "gray":
        params["bos"] = view.bos
    if view.show_all:
        params["all"] = 1
    if view.measure != "raw":
        params["measure"] = view.measure
    if words:
        params["words"] = 1
    c = continuation
    if c is not None and not compare and (c.max_new_tokens > 1 or not c.greedy):
        params["continue"] = int(c.max_new_tokens)
        if not c.greedy:
            params.update(temperature=float(c.temperature), seed=int(c.seed))
        params["step"] = int(step)
    return "?" + urlencode(params)


EMBED = "embed"  # ?embed=1: the compact page for a course's column (attn/web/embed.py)


def full_query(query: Mapping[str, str]) -> str:
    """A page address's query without `embed` ('?prompt=...'), '' when nothing is left:
    the same view on the whole explorer."""
    params = {k: v for k, v in query.items() if k != EMBED}
    return "?" + urlencode(params) if params else ""
