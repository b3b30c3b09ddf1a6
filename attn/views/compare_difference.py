"""How B differs from A, as HTML: B's weights minus A's token by token (the difference
strip) and what each prompt predicts and what the other gives that token. No matplotlib
here (the page and the API import this without drawing); every piece of user text is
escaped.
"""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.alignment import Alignment, aligned_weights
from attn.views.labels import head_label, measure_label, visible
from attn.views.palette import CHANGED, MORE_IN_A, MORE_IN_B, NO_DIFFERENCE, PREDICTED, ink_on
from attn.views.view import View, check_view

CELL_PX = 28  # the narrowest cell of the difference strip


# ---- the difference strip -----------------------------------------------------------------------


def _token(a: Analysis, b: Analysis, entry: tuple[int | None, int | None]) -> str:
    i, j = entry
    return a.tokens[i] if i is not None else b.tokens[j]


def _instead(a: Analysis, b: Analysis, alignment: Alignment) -> dict[int, str]:
    """For each one-sided entry, what the other prompt has in the same run of changes
    ("B has ' thirsty' here"), in one pass: a title per cell, never a run per cell."""
    out, k = {}, 0
    while k < len(alignment):
        if None not in alignment[k]:
            k += 1
            continue
        end = k
        while end < len(alignment) and None in alignment[end]:
            end += 1
        run = alignment[k:end]
        for side, name, tokens in ((0, "A", a.tokens), (1, "B", b.tokens)):
            have = [repr(tokens[e[side]]) for e in run if e[side] is not None]
            said = ", ".join(have[:3]) + (f" and {len(have) - 3} more" if len(have) > 3 else "")
            text = f"{name} has {said} here" if have else f"{name} has nothing here"
            for n, e in enumerate(run, start=k):
                if e[side] is None:  # this entry lacks `side`: say what `side` has instead
                    out[n] = text
        k = end
    return out


def _what(a: Analysis, view: View) -> str:
    """What the weights are, for the caption: 'attention weights at layer 12 (mean over heads)'."""
    if view.measure == "rollout":
        return f"{measure_label(view.measure)} (all {a.num_layers} layers)"
    return f"{measure_label(view.measure)} at layer {view.layer} ({head_label(view.head)})"


def difference_html(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> str:
    """B's weight minus A's for each alignment entry (0 for the side without the token), as a
    strip of cells in alignment order: orange where B gives the token more, blue where A does,
    white alike, the signed difference written in each cell; full colour at the largest
    difference after <BOS> (whose sink would wash out the rest: its own cell may saturate).
    The exact values are on hover, the changed tokens marked in orange; long prompts scroll
    sideways."""
    view = check_view(a, view)
    wa, wb = aligned_weights(a, b, alignment, view)
    diff = wb - wa
    body = np.abs(diff[1:])
    scale = float(body.max()) if body.size and body.max() > 0 else 1.0
    instead = _instead(a, b, alignment)
    colours = _diverging(diff / scale)
    cells = []
    for k, entry in enumerate(alignment):
        token = _token(a, b, entry)
        only = "A" if entry[1] is None else "B" if entry[0] is None else None
        name = repr(token) + (f" (only in {only}; {instead[k]})" if only else "")
        values = (f"A {_value(wa[k], entry[0] is None)}, B {_value(wb[k], entry[1] is None)}, "
                  f"B−A {_signed(diff[k], 4)}")
        cells.append(_cell(f"{name}: {values}", token, float(diff[k]), colours[k], only))
    where = "" if view.bos == "exclude" else " (scaled without &lt;BOS&gt;, whose own cell may saturate)"
    caption = (
        f"B − A: each token's {escape(_what(a, view))} in B minus in A, in percentage points; a token only "
        f"one prompt has (<span style=\"color:{CHANGED}\">orange</span>) counts 0 in the other."
    )
    ramp = f"rgb{MORE_IN_A},rgb{NO_DIFFERENCE},rgb{MORE_IN_B}".replace(" ", "")
    legend = (
        '<div class="attn-diff-legend" style="display:flex;align-items:center;gap:6px;font-size:12px;'
        f'color:#555;margin-top:4px"><span>more in A {_signed(-scale, 2)}</span>'
        f'<span style="display:inline-block;width:120px;height:10px;background:linear-gradient(to right,{ramp})">'
        f'</span><span>{_signed(scale, 2)} more in B{where}</span>'
        f'<span style="margin-left:12px;border-bottom:3px solid {CHANGED};color:{CHANGED}">only A / only B</span>'
        "<span>a token only that prompt has</span></div>"
    )
    return (
        '<div class="attn-diff" style="font-family:ui-sans-serif,system-ui,sans-serif">'
        f'<div style="font-size:13px;color:#333;margin-bottom:4px">{caption}</div>'
        '<div class="attn-scroll attn-roving" tabindex="0" role="group" aria-label="B minus A, token by token: the '
        'arrow keys step through them" style="overflow-x:auto">'
        '<div style="display:flex;width:max-content;align-items:flex-end;gap:1px">'
        f'{"".join(cells)}</div></div>{legend}</div>'
    )


def _diverging(t: np.ndarray) -> list[tuple[str, str]]:
    """(background, text colour) for each difference as a fraction of the scale: from
    near-white to blue (negative) or orange (positive), full colour at ±1 and beyond; the
    text black or white, whichever reads better on the cell."""
    t = np.clip(t, -1.0, 1.0)[:, None]
    zero = np.array(NO_DIFFERENCE, dtype=float)
    ends = np.where(t > 0, np.array(MORE_IN_B, dtype=float), np.array(MORE_IN_A, dtype=float))
    rgb = (zero + (ends - zero) * np.abs(t)).round().astype(int).tolist()
    return [(f"rgb({r},{g},{b})", ink_on((r, g, b))) for r, g, b in rgb]


def _cell(tip: str, token: str, diff: float, colour: tuple[str, str], only: str | None) -> str:
    """One entry: the token on its colour over the difference in percentage points; a
    changed token has a tag above ('only A') and an orange underline. Lean markup: a
    2048-token prompt has 2048 cells."""
    background, ink = colour
    points = round(100 * diff)
    shown = "0" if points == 0 else _signed(points, 0)
    tag = mark = ""
    if only:
        tag = f'<div style="font-size:9px;color:{CHANGED}">only {only}</div>'
        mark = f";box-shadow:inset 0 -3px 0 {CHANGED}"
    kind = f"attn-diff-only-{only.lower()}" if only else "attn-diff-shared"
    return (
        f'<div class="attn-diff-cell {kind}" data-delta="{diff:.6f}" title="{escape(tip, quote=True)}" '
        f'style="min-width:{CELL_PX}px;text-align:center">{tag}'
        f'<div style="background:{background};color:{ink};padding:2px 3px 4px;font-size:12px;white-space:pre{mark}">'
        f'{escape(visible(token, 10))}<br><span style="font-size:10px;color:{ink}">{shown}</span></div></div>'
    )


def _value(weight: float, absent: bool) -> str:
    return "0 (absent)" if absent else f"{weight:.4f}"


def _signed(x: float, digits: int) -> str:
    """+0.19 / −0.19, with a real minus sign."""
    return f"{x:+.{digits}f}".replace("-", "−")


# ---- the two predictions --------------------------------------------------------------------------


def cross_html(a: Analysis, b: Analysis, p_b_of_a_next: float | None, p_a_of_b_next: float | None) -> str:
    """What each prompt predicts and what the other gives that token, so that "the changed
    word moved the prediction" is a number. `p_b_of_a_next` is B's probability of A's next
    token, `p_a_of_b_next` A's of B's; None is said as "not known"."""
    name_a, name_b = escape(repr(a.next_token)), escape(repr(b.next_token))
    own_a, own_b = _own_probability(a), _own_probability(b)
    if a.next_token_id == b.next_token_id:
        text = f"A and B both predict {name_a}: A gives it {_p(own_a)}, B {_p(own_b)}."
    else:
        text = (f"A predicts {name_a} ({_p(own_a)}); B predicts {name_b} ({_p(own_b)}). "
                f"B gives {name_a} {_p(p_b_of_a_next)}; A gives {name_b} {_p(p_a_of_b_next)}.")
    return (f'<div class="attn-cross" style="font-family:ui-sans-serif,system-ui,sans-serif;font-size:14px;'
            f'margin:4px 0">{text}</div>')


def _own_probability(analysis: Analysis) -> float | None:
    """The probability the model gives its own prediction, where the analysis has it."""
    for t in analysis.top_k:
        if t.id == analysis.next_token_id:
            return t.prob
    return analysis.logit_lens[-1].p_next if analysis.logit_lens else None


def _p(p: float | None) -> str:
    """A probability as a percentage readable at any size (41%, 3%, 0.4%, 0.04%), bold, the
    exact value on hover; None as "not known"."""
    if p is None:
        return "<i>not known</i>"
    p = float(p)
    shown = (f"{p:.0%}" if p >= 0.01 else f"{100 * p:.1f}%" if p >= 0.001 else
             f"{100 * p:.2f}%" if p >= 0.0001 else "&lt;0.01%")
    return f'<b title="{p:.6f}" style="color:{PREDICTED}">{shown}</b>'
