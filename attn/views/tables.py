"""The views as tables ("Show as table"): the numbers a figure draws, as HTML tables that a
screen reader can walk cell by cell and a student can copy into a spreadsheet.

- `view_table`: the current view, one row per token: position, token, weight, rank.
- `overview_table`: the all-layers view, one row per token with its weight at every layer
  (its mean and rank over layers), then the logit lens, one row per layer.
- `compare_table`: a comparison, one row per aligned token: weight and rank in A and in B,
  and B − A.

Weights are the views' own (attn/views/view.py), written with 4 decimals, as the hover
popups give them; a rank is 1 for the most weight, and equal weights share a rank
(competition ranking: 1, 2, 2, 4). <BOS> is a row like any other. Every piece of user text
is escaped.
"""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.alignment import Alignment, aligned_weights
from attn.views.describe import view_name
from attn.views.labels import head_label, measure_label
from attn.views.view import View, check_view, first_generated, overview, row

OVERVIEW_ROWS = 64  # past this many tokens the all-layers table keeps the most attended on average
BOX = "max-height:480px;overflow:auto;margin-top:6px"
TABLE = "border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums"


def ranks(weights: np.ndarray) -> np.ndarray:
    """(T,) int: 1 + how many weights are larger (ties share the best rank)."""
    ascending = np.sort(weights)
    return 1 + len(weights) - np.searchsorted(ascending, weights, side="right")


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _token(analysis: Analysis, j: int) -> str:
    text = escape(repr(analysis.tokens[j]))
    return text + " (generated)" if j >= first_generated(analysis) else text


def _table(caption: str, label: str, head: list[str], rows: list[list[str]], names: int = 1) -> str:
    """A captioned table in a focusable box that scrolls; each row's cell `names` names the row."""
    header = "".join(f'<th scope="col">{h}</th>' for h in head)
    body = "".join(
        "<tr>" + "".join(f'<th scope="row">{c}</th>' if k == names else f"<td>{c}</td>" for k, c in enumerate(cells))
        + "</tr>"
        for cells in rows
    )
    return (
        f'<div class="attn-table-box attn-scroll" tabindex="0" role="group" aria-label="{escape(label, quote=True)}" '
        f'style="{BOX}"><table class="attn-table" style="{TABLE}"><caption>{caption}</caption>'
        f"<thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def view_table(analysis: Analysis, view: View) -> str:
    """The current view's weights: position, token, weight, rank; one row per token."""
    view = check_view(analysis, view)
    weights = row(analysis, view)
    rank = ranks(weights)
    unit = "Word" if analysis.words else "Token"
    note = {"gray": "", "hide": " &lt;BOS&gt; is not drawn; its weight is unchanged.",
            "exclude": " &lt;BOS&gt; is excluded and the other weights renormalised."}[view.bos]
    caption = (f"{_first_upper(escape(view_name(analysis, view)))}: the weight each {unit.lower()} gets from the "
               f"position that predicts {escape(repr(analysis.next_token))}. Rank 1 is the most.{note}")
    rows = [[str(j), _token(analysis, j), f"{weights[j]:.4f}", str(rank[j])] for j in range(analysis.num_tokens)]
    return _table(caption, f"Table: {unit.lower()}s and their weights",
                  ["Position", unit, "Weight", "Rank"], rows)


def overview_table(analysis: Analysis, view: View) -> str:
    """Every layer's weights per token (with their mean and its rank), then the logit lens."""
    view = check_view(analysis, view)
    data = overview(analysis, view)
    unit = "Word" if analysis.words else "Token"
    rollout = view.measure == "rollout"
    mean = data.mean(axis=0)
    rank = ranks(mean)
    keep = list(range(analysis.num_tokens))
    scope = ""
    if len(keep) > OVERVIEW_ROWS:
        keep = sorted(int(j) for j in np.argsort(-mean, kind="stable")[:OVERVIEW_ROWS])
        scope = (f" The prompt has {analysis.num_tokens} {unit.lower()}s: these are the {OVERVIEW_ROWS} with the "
                 f"most weight on average, in prompt order; the view's own table lists every one.")
    if rollout:
        head = ["Position", unit, "Rollout", "Rank"]
        rows = [[str(j), _token(analysis, j), f"{data[0, j]:.4f}", str(rank[j])] for j in keep]
        what = "Attention rollout, every layer and head combined"
    else:
        layers = [f"Layer {i} ({analysis.layer_types[i]})" for i in range(analysis.num_layers)]
        head = ["Position", unit, *layers, "Mean over layers", "Rank of the mean"]
        rows = [[str(j), _token(analysis, j), *(f"{x:.4f}" for x in data[:, j]), f"{mean[j]:.4f}", str(rank[j])]
                for j in keep]
        what = f"Every layer at once ({measure_label(view.measure)}, {head_label(view.head)})"
    caption = (f"{what}: the weight each {unit.lower()} gets from the position that predicts "
               f"{escape(repr(analysis.next_token))}.{scope}")
    out = _table(caption, "Table: every layer's weights", head, rows)
    return out + lens_table(analysis) if analysis.logit_lens else out


def lens_table(analysis: Analysis) -> str:
    """The logit lens: each layer's own top guess and the probability it gives the prediction."""
    nxt = escape(repr(analysis.next_token))
    rows = [[str(i), escape(analysis.layer_types[i]), escape(repr(g.token)), f"{g.prob:.4f}", f"{g.p_next:.4f}"]
            for i, g in enumerate(analysis.logit_lens)]
    caption = (f"The logit lens: each layer's own top guess for the next token, and the probability that layer "
               f"already gives the final prediction, {nxt}.")
    return _table(caption, "Table: the logit lens", ["Layer", "Kind", "Top guess", "Its probability",
                                                     f"Probability of {nxt}"], rows, names=0)


def compare_table(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> str:
    """One row per aligned token: in which prompt, weight and rank in A and in B, B − A."""
    view = check_view(a, view)
    wa, wb = aligned_weights(a, b, alignment, view)
    rank_a, rank_b = ranks(row(a, view)), ranks(row(b, view))
    rows = []
    for k, (i, j) in enumerate(alignment):
        token = _token(a, i) if i is not None else _token(b, j)
        where = "both" if i is not None and j is not None else "A only" if j is None else "B only"
        rows.append([str(k), token, where,
                     "—" if i is None else f"{wa[k]:.4f}", "—" if i is None else str(rank_a[i]),
                     "—" if j is None else f"{wb[k]:.4f}", "—" if j is None else str(rank_b[j]),
                     f"{wb[k] - wa[k]:+.4f}".replace("-", "−")])
    caption = (f"{_first_upper(escape(view_name(a, view)))}, prompt A beside prompt B, token by token (shared "
               f"tokens on one row). A predicts {escape(repr(a.next_token))}, B {escape(repr(b.next_token))}. "
               "Rank 1 is the most in that prompt; a token one prompt lacks counts 0 there.")
    return _table(caption, "Table: prompt A and prompt B's weights",
                  ["Column", "Token", "In", "Weight in A", "Rank in A", "Weight in B", "Rank in B", "B − A"], rows)
