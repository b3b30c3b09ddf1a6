"""What a student who cannot see the figures gets (issue 19): text alternatives that carry
the data, "Show as table" tables, each highlighted token's weight for assistive technology,
and the embed mode's links. Without a browser: the real model's analysis, read back from
the HTML the views write. The references are computed here from the analysis's own arrays
(numpy, not the views' functions). The page in a browser: tests/test_a11y.py.
"""

from __future__ import annotations

import re
from html import unescape

import numpy as np
import pytest

from attn.compute.compare import align
from attn.views import words
from attn.views.describe import compare_alt, diagram_alt
from attn.views.highlight import token_html
from attn.views.tables import OVERVIEW_ROWS, compare_table, overview_table, ranks, view_table
from attn.views.view import View
from attn.web.link import full_query
from helpers import HUNGRY, audit_html, made_up

LAYER = 12


def mean_row(analysis, layer: int = LAYER) -> np.ndarray:
    """The predicting position's raw weights at `layer`, mean over heads: the reference."""
    return analysis.last_row[layer].astype(np.float64).mean(axis=0)


def top_three(weights: np.ndarray) -> list[int]:
    """The three positions after <BOS> with the most weight, by a plain sort."""
    return sorted(range(1, len(weights)), key=lambda j: (-weights[j], j))[:3]


def table_rows(fragment: str) -> list[list[str]]:
    """The body rows of every table in a fragment, as unescaped cell texts."""
    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", fragment, re.S))
    return [[unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
            for r in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.fixture(scope="module")
def hungry(bundled):
    from attn.compute.forward import analyze

    return analyze(bundled, HUNGRY)


# ---- the line diagram's text alternative ----------------------------------------------------------


def test_the_diagram_alt_names_layer_head_measure_and_prediction(thirsty_analysis):
    alt = diagram_alt(thirsty_analysis, View(layer=LAYER))
    assert "attention weights at layer 12 (local (sliding window 512)), mean over heads" in alt
    assert f"{thirsty_analysis.model} predicts “water”" in alt


def test_the_diagram_alt_names_the_three_most_attended_tokens_with_their_weights(thirsty_analysis):
    weights = mean_row(thirsty_analysis)
    alt = diagram_alt(thirsty_analysis, View(layer=LAYER))
    named = ", ".join(f"“{thirsty_analysis.tokens[j].strip()}” {weights[j]:.3f}" for j in top_three(weights))
    assert f"Most attended tokens: {named}; <BOS>, the attention sink, {weights[0]:.3f}." in alt


def test_the_diagram_alt_follows_the_head_and_the_measure(thirsty_analysis):
    one_head = thirsty_analysis.last_row[3][2]
    alt = diagram_alt(thirsty_analysis, View(layer=3, head=2))
    assert "at layer 3 (local (sliding window 512)), head 2." in alt
    assert f"“{thirsty_analysis.tokens[top_three(one_head)[0]].strip()}” {one_head[top_three(one_head)[0]]:.3f}" in alt
    rollout = thirsty_analysis.rollout
    alt = diagram_alt(thirsty_analysis, View(layer=0, measure="rollout"))
    assert alt.startswith("Line diagram of attention rollout through all 18 layers")
    assert f"{rollout[top_three(rollout)[0]]:.3f}" in alt


def test_with_bos_excluded_the_alt_leaves_the_sink_out(thirsty_analysis):
    assert "<BOS>" not in diagram_alt(thirsty_analysis, View(layer=LAYER, bos="exclude"))


def test_the_comparison_alt_gives_both_predictions_and_their_most_attended(hungry, thirsty_analysis):
    alignment = align(hungry.tokens, thirsty_analysis.tokens)
    alt = compare_alt(hungry, thirsty_analysis, alignment, View(layer=LAYER))
    for name, side in (("A", hungry), ("B", thirsty_analysis)):
        weights = mean_row(side)
        first = top_three(weights)[0]
        assert f"{name}: {side.model} predicts “{side.next_token.strip()}”." in alt
        assert f"“{side.tokens[first].strip()}” {weights[first]:.3f}" in alt
    assert "2 tokens are in one prompt only." in alt  # " hungry" and " thirsty"


# ---- "Show as table" ------------------------------------------------------------------------------


def test_ranks_count_the_larger_weights_and_ties_share_the_best_rank():
    assert ranks(np.array([0.1, 0.3, 0.3, 0.05])).tolist() == [3, 1, 1, 4]


def test_the_view_table_has_every_token_its_weight_and_its_rank(thirsty_analysis):
    weights = mean_row(thirsty_analysis)
    fragment = view_table(thirsty_analysis, View(layer=LAYER))
    audit_html(fragment)
    rows = table_rows(fragment)
    assert [r[0] for r in rows] == [str(j) for j in range(thirsty_analysis.num_tokens)]
    assert [r[1] for r in rows] == [repr(t) for t in thirsty_analysis.tokens]
    assert [float(r[2]) for r in rows] == pytest.approx(weights.tolist(), abs=5e-5)
    order = sorted(range(len(weights)), key=lambda j: -weights[j])
    assert [int(rows[j][3]) for j in order] == list(range(1, len(weights) + 1))  # no ties here
    assert '<th scope="col">Rank</th>' in fragment and "<caption>" in fragment


def test_the_view_table_of_words_sums_the_pieces(thirsty_analysis):
    merged = words.merged(thirsty_analysis)
    rows = table_rows(view_table(merged, View(layer=LAYER)))
    assert rows[1][1] == "'Jide'"
    weights = mean_row(thirsty_analysis)
    assert float(rows[1][2]) == pytest.approx(weights[1] + weights[2], abs=5e-5)


def test_the_all_layers_table_has_each_layer_s_weight_and_the_logit_lens(thirsty_analysis):
    fragment = overview_table(thirsty_analysis, View(layer=LAYER))
    audit_html(fragment)
    tokens, lens = fragment.split("The logit lens")
    rows = table_rows(tokens)
    every = thirsty_analysis.last_row.astype(np.float64).mean(axis=1)  # (layers, T)
    thirsty = thirsty_analysis.tokens.index(" thirsty")
    assert [float(x) for x in rows[thirsty][2:-2]] == pytest.approx(every[:, thirsty].tolist(), abs=5e-5)
    assert float(rows[thirsty][-2]) == pytest.approx(every[:, thirsty].mean(), abs=5e-5)
    lens_rows = table_rows(lens)
    assert len(lens_rows) == thirsty_analysis.num_layers
    assert lens_rows[-1][2] == repr(thirsty_analysis.next_token)  # the last layer's guess is the prediction


def test_a_long_prompt_s_all_layers_table_keeps_the_most_attended():
    analysis = made_up([f" t{i}" for i in range(OVERVIEW_ROWS + 40)])
    rows = table_rows(overview_table(analysis, View(layer=0)))
    assert len(rows) == OVERVIEW_ROWS


def test_the_comparison_table_puts_shared_tokens_on_one_row(hungry, thirsty_analysis):
    alignment = align(hungry.tokens, thirsty_analysis.tokens)
    fragment = compare_table(hungry, thirsty_analysis, alignment, View(layer=LAYER))
    audit_html(fragment)
    rows = table_rows(fragment)
    assert len(rows) == len(alignment)
    where = {r[1]: r[2] for r in rows}
    assert where["' hungry'"] == "A only" and where["' thirsty'"] == "B only" and where["' for'"] == "both"
    wa, wb = mean_row(hungry), mean_row(thirsty_analysis)
    (row,) = [r for r in rows if r[1] == "' for'"]
    i, j = hungry.tokens.index(" for"), thirsty_analysis.tokens.index(" for")
    assert float(row[3]) == pytest.approx(wa[i], abs=5e-5) and float(row[5]) == pytest.approx(wb[j], abs=5e-5)
    assert float(row[7].replace("−", "-")) == pytest.approx(wb[j] - wa[i], abs=1e-4)


def test_table_cells_are_escaped_text():
    analysis = made_up(["<script>x</script>", " &amp;"])
    for fragment in (view_table(analysis, View(layer=0)), overview_table(analysis, View(layer=0))):
        audit = audit_html(fragment)
        assert "'<script>x</script>'" in audit.text


# ---- the highlighted tokens -----------------------------------------------------------------------


def test_every_highlighted_token_carries_its_weight_for_assistive_technology(thirsty_analysis):
    weights = mean_row(thirsty_analysis)
    fragment = token_html(thirsty_analysis, View(layer=LAYER))
    audit_html(fragment)
    said = dict(re.findall(r'data-pos="(\d+)"[^>]*data-percent="([0-9.]+)"', fragment))
    assert {int(k) for k in said} == set(range(1, thirsty_analysis.num_tokens))
    for pos, percent in said.items():
        assert float(percent) == pytest.approx(100 * weights[int(pos)], abs=0.051)


def test_the_highlighted_strip_is_one_keyboard_stop_with_a_name(thirsty_analysis):
    fragment = token_html(thirsty_analysis, View(layer=LAYER))
    assert re.search(r'<div class="attn-tokens [^"]*attn-roving[^"]*" tabindex="0" role="group" aria-label="[^"]+"',
                     fragment)


# ---- the embed mode's links -----------------------------------------------------------------------


def test_the_full_explorer_link_is_the_same_view_without_embed():
    assert full_query({"embed": "1", "prompt": "a b", "layer": "3"}) == "?prompt=a+b&layer=3"
    assert full_query({"embed": "1"}) == ""


def test_the_full_explorer_opens_in_a_new_tab_and_escapes_its_address():
    from attn.web.embed import full_explorer_html

    html = full_explorer_html('?prompt="><script>')
    assert 'target="_blank"' in html and 'rel="noopener"' in html and "(opens in a new tab)" in html
    assert '"><script>' not in html
    assert 'href="./"' in full_explorer_html("")
