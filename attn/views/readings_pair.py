""""What the numbers say" for two prompts (steps 2 and 5) and for token ablation (step 3):
escaped HTML computed from the comparison or the ablation on screen (attn/views/readings.py
holds the single-prompt readings and the `Screen`)."""

from __future__ import annotations

from html import escape

import numpy as np

from attn.compute.ablation import agreement
from attn.compute.profiles import profile_similarity
from attn.views.ablation_bars import agreement_text
from attn.views.labels import head_label
from attn.views.readings import Screen, and_list, layer_list, pct, per_layer, tok, top_non_bos, what
from attn.views.view import View, check_view, row


def points(delta: float) -> str:
    """A change in probability as signed percentage points, with a real minus sign."""
    return f"{delta * 100:+.0f}".replace("-", "−")


def signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _needs_comparison(step: str) -> str:
    return (f"<p>{step} compares two prompts: tick <b>Compare with a second prompt (B)</b>, type prompt B and "
            "press Analyze.</p>")


def _quote(prompt: str, limit: int = 48) -> str:
    text = prompt if len(prompt) <= limit else "…" + prompt[-(limit - 1):]
    return f"“{escape(text)}”"


# ---- step 2: what changed, and where ------------------------------------------------------------


def comparison(screen: Screen) -> str:
    c = screen.comparison
    if c is None:
        return _needs_comparison("This step")
    a, b = c.a, c.b
    view = check_view(a, screen.view)
    only_a, only_b = c.changed()
    text = (f"<p>A ({_quote(a.prompt)}) predicts {tok(a.next_token)} ({pct(a.top_k[0].prob)}); B "
            f"({_quote(b.prompt)}) predicts {tok(b.next_token)} ({pct(b.top_k[0].prob)}).")
    if c.p_b_of_a_next is not None and c.p_a_of_b_next is not None and a.next_token_id != b.next_token_id:
        text += (f" B gives A's {tok(a.next_token)} {pct(c.p_b_of_a_next)}, and A gives B's {tok(b.next_token)} "
                 f"{pct(c.p_a_of_b_next)}.")
    if not only_a and not only_b:
        return text + " The two prompts have the same tokens.</p>"
    changed = (f"{and_list([tok(a.tokens[i]) for i in only_a]) or 'nothing'} became "
               f"{and_list([tok(b.tokens[j]) for j in only_b]) or 'nothing'}")
    text += f" What changed: {changed}.</p>"
    wa, wb = per_layer(a, view), per_layer(b, view)
    on_a = wa[:, only_a].sum(axis=1) if only_a else np.zeros(a.num_layers)
    on_b = wb[:, only_b].sum(axis=1) if only_b else np.zeros(b.num_layers)
    lead_a = [i for i, t in enumerate(top_non_bos(wa)) if t in only_a]
    lead_b = [i for i, t in enumerate(top_non_bos(wb)) if t in only_b]

    def leads(layers: list[int], side: str) -> str:
        return (f"leads {side}'s attention (after &lt;BOS&gt;) at layer{'s' if len(layers) > 1 else ''} "
                f"{layer_list(layers)}" if layers else f"never leads {side}'s attention")

    layer = view.layer if view.measure != "rollout" else int(np.argmax(on_a + on_b))
    text += (f"<p>Where ({escape(what(view))}): the changed word {leads(lead_a, 'A')} and {leads(lead_b, 'B')}. "
             f"It gets the most at layer {int(np.argmax(on_a))} in A ({pct(float(on_a.max()))}) and layer "
             f"{int(np.argmax(on_b))} in B ({pct(float(on_b.max()))}); at layer {layer}, {pct(float(on_a[layer]))} "
             f"in A against {pct(float(on_b[layer]))} in B.")
    shared = [(i, j) for i, j in c.alignment if i is not None and j is not None and i > 0]
    if shared:
        diff = np.stack([wb[:, j] - wa[:, i] for i, j in shared], axis=1)  # (layers, shared tokens)
        layer_max, k = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
        i, _ = shared[int(k)]
        text += (f" Among the tokens both share, the biggest move is {tok(a.tokens[i])} at layer {int(layer_max)}: "
                 f"{points(float(diff[layer_max, k]))} points from A to B.")
    return text + "</p>"


# ---- step 3: deleting tokens against the attention ranking --------------------------------------


def ablation(screen: Screen) -> str:
    a, ablated = screen.analysis, screen.ablation
    if ablated is None or ablated.prompt != a.prompt or a.words:
        return ("<p>Press <b>Check by removing tokens</b>: the model runs once more per token deleted, and this "
                "paragraph compares what each token was worth with the attention it got.</p>")
    view = check_view(a, screen.view)
    worst = min(ablated.deletions, key=lambda d: d.delta)
    text = (f"<p>With every token, P({tok(ablated.next_token)}) = {pct(ablated.p_next)}. Deleting "
            f"{tok(worst.token)} changes it most: to {pct(worst.p_next)} ({points(worst.delta)} points). "
            f"{agreement_text(ablated, row(a, view), a, view)}</p>")
    rhos = []
    for layer in range(a.num_layers):
        rho = agreement(ablated, row(a, View(layer=layer, head=view.head, measure="raw"))).spearman
        rhos.append(np.nan if rho is None else rho)
    rhos = np.asarray(rhos, dtype=np.float64)
    if np.isfinite(rhos).any():
        best, worst_layer = int(np.nanargmax(rhos)), int(np.nanargmin(rhos))
        positive = int(np.count_nonzero(rhos > 0))
        text += (f"<p>Layer by layer (attention weights, {escape(head_label(view.head))}), the ranking agrees "
                 f"best with the deletions at layer {best} (ρ = {signed(rhos[best])}) and least at layer "
                 f"{worst_layer} (ρ = {signed(rhos[worst_layer])}); ρ is positive in {positive} of {a.num_layers} "
                 "layers. A token can be attended and not needed, or needed and barely attended.</p>")
    return text


# ---- step 5: which layers behave alike, whatever the text ----------------------------------------


def alike(screen: Screen) -> str:
    c = screen.comparison
    if c is None:
        return _needs_comparison("This step")
    a, b = c.a, c.b
    if a.profiles is None or b.profiles is None:
        return "<p>Head profiles come with an analysis of a typed prompt; predict one token to compare them.</p>"
    sim = profile_similarity(a.profiles, a.pieces or a.num_tokens, b.profiles, b.pieces or b.num_tokens)
    ranked = [int(i) for i in np.argsort(-sim, kind="stable")]
    kind = ["G" if t == "global" else "L" for t in a.layer_types]
    top, bottom = ranked[:3], ranked[-3:][::-1]

    def named(layers: list[int]) -> str:
        return and_list([f"{i} {kind[i]} ({sim[i]:.2f})" for i in layers])

    best = top[0]
    bos_a, bos_b = a.profiles.bos[best].mean(), b.profiles.bos[best].mean()
    prev_a, prev_b = np.nanmean(a.profiles.previous[best]), np.nanmean(b.profiles.previous[best])
    ranking = ", ".join(f"{i}{kind[i]} {sim[i]:.2f}" for i in ranked)
    return (f"<p>Comparing each layer's head profiles on the two prompts (similarity 1 = every head parks on "
            f"&lt;BOS&gt;, reads the previous token and spreads its attention the same on both; see the "
            f"definition in the docs): the layers that behave most alike regardless of the text are "
            f"{named(top)}; the least alike are {named(bottom)}.</p>"
            f"<p>At layer {best}, the heads give &lt;BOS&gt; {pct(float(bos_a))} on A and {pct(float(bos_b))} on B, "
            f"and the previous token {pct(float(prev_a))} and {pct(float(prev_b))}: a habit of the layer, not of "
            f"the words. All layers, most alike first: {ranking}.</p>")
