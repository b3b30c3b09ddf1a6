"""Two prompts compared (attn/views/compare_diagram.py and compare_difference.py): A's line
diagram over B's with the tokens they share in one column, the changed ones marked; B's
weights minus A's token by token; what each predicts and what the other gives it."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html import unescape

import numpy as np
import pytest
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

from attn.compute.analysis import Analysis
from attn.compute.forward import analyze
from attn.views.alignment import aligned_weights
from attn.views.compare_diagram import compare_html, compare_svg
from attn.views.compare_difference import CELL_PX, cross_html, difference_html
from attn.views.labels import visible
from attn.views.palette import BLUE, CHANGED, GRAY
from attn.views.view import View, row
from conftest import ROOT
from helpers import THIRSTY, audit_html, made_up

HUNGRY = "Jide was hungry so she went looking for"
HOSTILE = "Jide was <img src=x onerror=alert(1)> so she went looking for"
VIEW = View(layer=12)


def align(a: Analysis, b: Analysis) -> list[tuple[int | None, int | None]]:
    """The alignment attn/compute/compare.py is to produce, built here with difflib over the tokens."""
    out = []
    matcher = difflib.SequenceMatcher(a=a.tokens, b=b.tokens, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += list(zip(range(i1, i2), range(j1, j2)))
        else:
            out += [(i, None) for i in range(i1, i2)] + [(None, j) for j in range(j1, j2)]
    return out


@pytest.fixture(scope="module")
def hungry(bundled):
    return analyze(bundled, HUNGRY)


@pytest.fixture(scope="module")
def thirsty(bundled):
    return analyze(bundled, THIRSTY)


@pytest.fixture(scope="module")
def hostile(bundled):
    return analyze(bundled, HOSTILE)


@pytest.fixture(scope="module")
def figure(hungry, thirsty):
    return compare_svg(hungry, thirsty, align(hungry, thirsty), VIEW)


@pytest.fixture(scope="module")
def long_pair():
    """600 tokens each; B changes one word in the middle and inserts one further on."""
    words = [f" w{i}" for i in range(599)]
    changed = list(words)
    changed[300] = " changed"
    changed.insert(450, " new")
    a, b = made_up(words, seed=1), made_up(changed, seed=2)
    return a, b, align(a, b)


def texts(svg: bytes) -> list[tuple[str, float, float, str]]:
    """(text, x, baseline y, style) of every <text> in the SVG."""
    return [(el.text or "", float(el.get("x")), float(el.get("y")), el.get("style", ""))
            for el in ET.fromstring(svg).iter() if el.tag.endswith("text")]


def input_rows(svg: bytes) -> tuple[list, list]:
    """A's and B's input labels (text, x, style), each in token order: the labels on or one
    staggered line below each 'Input:' row title."""
    drawn = texts(svg)
    rows = sorted(y for text, _, y, _ in drawn if text == "Input:")
    assert len(rows) == 2
    sides = []
    for y0 in rows:
        labels = [(t, x, style) for t, x, y, style in drawn
                  if y0 - 0.5 <= y <= y0 + 25 and t != "Input:" and "text-anchor: middle" in style]
        sides.append(sorted(labels, key=lambda label: label[1]))
    return sides[0], sides[1]


def cells(html: str) -> list[tuple[str, float, str]]:
    """(class, data-delta, title) of every cell of the difference strip, after the audit."""
    audit_html(html)
    found = re.findall(r'<div class="(attn-diff-cell[^"]*)" data-delta="([^"]+)" title="([^"]*)"', html)
    return [(kind, float(delta), unescape(title)) for kind, delta, title in found]


# ---- the figure -----------------------------------------------------------------------------------


def test_the_figure_stacks_two_diagrams_under_one_view_title(figure, hungry, thirsty):
    drawn = [text for text, *_ in texts(figure.data)]
    assert drawn.count("Attention Weights for Layer 12 · local (sliding window 512) · mean over heads") == 1
    assert "A: gemma-3-270m predicts ' a'" in drawn and "B: gemma-3-270m predicts ' water'" in drawn
    assert drawn.count("Output:") == 2 and drawn.count("Input:") == 2


def test_each_diagram_draws_every_token_of_its_own_prompt_in_order(figure, hungry, thirsty):
    for side, analysis in zip(input_rows(figure.data), (hungry, thirsty)):
        assert [text for text, *_ in side] == [visible(t) for t in analysis.tokens]


def test_every_shared_token_has_its_two_labels_at_the_same_x(figure, hungry, thirsty):
    in_a, in_b = input_rows(figure.data)
    alignment = align(hungry, thirsty)
    shared = [(i, j) for i, j in alignment if i is not None and j is not None]
    assert len(shared) == 9  # all but ' hungry' / ' thirsty'
    for i, j in shared:
        assert in_a[i][1] == pytest.approx(in_b[j][1], abs=0.01), hungry.tokens[i]


def test_a_changed_token_has_a_column_of_its_own(figure):
    in_a, in_b = input_rows(figure.data)
    x_hungry = next(x for text, x, _ in in_a if text == " hungry")
    x_thirsty = next(x for text, x, _ in in_b if text == " thirsty")
    assert x_hungry < x_thirsty
    assert all(abs(x - x_hungry) > 1 for _, x, _ in in_b) and all(abs(x - x_thirsty) > 1 for _, x, _ in in_a)


def test_the_changed_tokens_are_marked_and_the_legend_says_what_the_mark_means(figure):
    in_a, in_b = input_rows(figure.data)
    marked = {text for text, _, style in in_a + in_b if CHANGED in style}
    assert marked == {" hungry", " thirsty"}
    assert figure.data.decode().count(f"stroke: {CHANGED}") == 3  # their two boxes and the legend's sample
    assert any("only this prompt has the token" in text for text, *_ in texts(figure.data))


def test_each_diagram_draws_its_lines_from_its_own_predicting_position(figure, hungry, thirsty):
    tops = []
    for el in ET.fromstring(figure.data).iter():
        if el.tag.endswith("path") and re.search(f"stroke: ({BLUE}|{GRAY})", el.get("style", "")):
            x0, y0, x1, y1 = map(float, re.findall(r"-?\d+(?:\.\d+)?", el.get("d"))[:4])
            tops.append(x0 if y0 < y1 else x1)
    assert len(tops) == hungry.num_tokens + thirsty.num_tokens  # every weight at layer 12 is positive
    in_a, in_b = input_rows(figure.data)
    assert in_a[-1][1] == in_b[-1][1]  # both prompts end with ' for', in one column
    assert set(np.round(tops, 1)) == {round(in_a[-1][1], 1)}


def test_no_two_labels_of_a_row_touch(figure):
    """Measured by matplotlib's own text layout: the legibility rule of the single diagram."""
    rows: dict[float, list[tuple[float, float]]] = {}
    for text, x, y, style in texts(figure.data):
        if "text-anchor: middle" in style and f"font-size: {figure.label_pt:g}px" in style:
            width = text_to_path.get_text_width_height_descent(
                text, FontProperties(size=figure.label_pt, weight="bold" if "700" in style else "normal"),
                ismath=False)[0]
            rows.setdefault(round(y, 1), []).append((x - width / 2, x + width / 2))
    token_rows = {y: spans for y, spans in rows.items() if len(spans) > 1}  # not the titles
    assert len(token_rows) == 8  # each prompt's Output and Input, in two staggered rows each
    for spans in token_rows.values():
        spans.sort()
        assert all(left[1] < right[0] for left, right in zip(spans, spans[1:]))


def test_all_pairs_mode_draws_every_positions_lines_in_both_diagrams(hungry, thirsty):
    svg = compare_svg(hungry, thirsty, align(hungry, thirsty), View(layer=5, show_all=True)).data.decode()
    lines = len(re.findall(f"stroke: (?:{BLUE}|{GRAY})", svg))
    assert lines > 4 * (hungry.num_tokens + thirsty.num_tokens)  # 55 pairs each, less any weight of 0


def test_hostile_labels_stay_text_in_the_figure(hungry, hostile):
    svg = compare_svg(hungry, hostile, align(hungry, hostile), VIEW).data
    root = ET.fromstring(svg)  # well-formed: every label XML-escaped
    assert not any(el.tag.endswith(("img", "script", "foreignObject")) for el in root.iter())
    assert " onerror" in [text for text, *_ in texts(svg)]


def test_the_figure_is_drawn_in_tens_of_milliseconds(hungry, thirsty):
    alignment = align(hungry, thirsty)
    compare_svg(hungry, thirsty, alignment, VIEW)  # text metrics measured once
    best = min(_seconds(lambda: compare_svg(hungry, thirsty, alignment, View(layer=3))) for _ in range(3))
    assert best < 0.25  # measured about 10 ms on a 2-core machine


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def test_a_600_token_comparison_keeps_24_columns_and_says_so(long_pair):
    a, b, alignment = long_pair
    svg = compare_svg(a, b, alignment, View(layer=0))
    drawn = [text for text, *_ in texts(svg.data)]
    assert any(text.startswith("Showing 24 of 602 columns") for text in drawn)
    assert {" changed", " new", " w300"} <= set(drawn)  # the changed tokens are always kept
    assert drawn.count("<BOS>") == 2 and "⋯" in drawn and svg.width_px <= 16 * 96


def test_a_600_token_comparison_is_drawn_quickly(long_pair):
    a, b, alignment = long_pair
    best = min(_seconds(lambda: compare_svg(a, b, alignment, View(layer=1))) for _ in range(3))
    assert best < 0.5  # measured about 40 ms


def test_max_columns_forces_the_reduction(hungry, thirsty):
    svg = compare_svg(hungry, thirsty, align(hungry, thirsty), VIEW, max_columns=6).data.decode()
    assert "Showing 6 of 11 columns" in svg and "hungry" in svg and "thirsty" in svg


def test_on_the_page_the_figure_is_an_img_with_its_own_description(figure):
    html = compare_html(figure, VIEW)
    assert html.count("<img ") == 1 and 'alt="Two line diagrams, prompt A over prompt B' in html
    smallest = float(re.search(r"min-width:(\d+)px", html).group(1))
    assert smallest / figure.width_px * figure.label_pt >= 7.2 - 0.01


# ---- the difference strip -------------------------------------------------------------------------


def test_each_shared_tokens_cell_holds_b_minus_a(hungry, thirsty):
    alignment = align(hungry, thirsty)
    wa, wb = row(hungry, VIEW), row(thirsty, VIEW)
    strip = cells(difference_html(hungry, thirsty, alignment, VIEW))
    assert len(strip) == len(alignment)
    for (i, j), (kind, delta, title) in zip(alignment, strip):
        if i is not None and j is not None:
            assert kind == "attn-diff-cell attn-diff-shared"
            assert delta == pytest.approx(wb[j] - wa[i], abs=1e-6)
            assert f"A {wa[i]:.4f}, B {wb[j]:.4f}" in title


def test_a_token_one_prompt_lacks_counts_0_there(hungry, thirsty):
    strip = cells(difference_html(hungry, thirsty, align(hungry, thirsty), VIEW))
    only_a = [c for c in strip if c[0].endswith("only-a")]
    only_b = [c for c in strip if c[0].endswith("only-b")]
    assert len(only_a) == len(only_b) == 1
    assert only_a[0][1] == pytest.approx(-row(hungry, VIEW)[4], abs=1e-6)
    assert only_b[0][1] == pytest.approx(row(thirsty, VIEW)[4], abs=1e-6)
    assert only_b[0][2].startswith("' thirsty' (only in B; A has ' hungry' here): A 0 (absent), B 0.")


def test_the_strip_is_the_aligned_weights_difference_at_every_view(hungry, thirsty):
    alignment = align(hungry, thirsty)
    views = (View(layer=3, head="max"), View(layer=7, bos="exclude", measure="value"), View(layer=0, measure="rollout"))
    for view in views:
        wa, wb = aligned_weights(hungry, thirsty, alignment, view)
        deltas = [delta for _, delta, _ in cells(difference_html(hungry, thirsty, alignment, view))]
        assert deltas == pytest.approx(wb - wa, abs=1e-6)


def test_the_strip_escapes_every_token(hungry, hostile):
    html = difference_html(hungry, hostile, align(hungry, hostile), VIEW)
    audit = audit_html(html)  # no element or attribute the prompt could have brought
    assert " <" in audit.text and " onerror" in audit.text  # shown as text
    assert any(title.startswith("' <' (only in B; A has ' hungry' here)") for _, _, title in cells(html))


def test_a_long_strip_scrolls_with_a_cell_per_entry_at_least_28_px_wide(long_pair):
    a, b, alignment = long_pair
    start = time.perf_counter()
    html = difference_html(a, b, alignment, View(layer=0))
    assert time.perf_counter() - start < 0.5  # measured about 30 ms
    assert len(cells(html)) == len(alignment) == 602
    assert "overflow-x:auto" in html and html.count(f"min-width:{CELL_PX}px") == 602 and CELL_PX >= 28


def test_the_strip_says_what_it_shows(hungry, thirsty):
    text = "".join(audit_html(difference_html(hungry, thirsty, align(hungry, thirsty), VIEW)).text)
    assert "B − A" in text and "attention weights at layer 12 (mean over heads)" in text
    assert "more in A" in text and "more in B" in text and "only A / only B" in text


# ---- the predictions ----------------------------------------------------------------------------


def test_the_cross_block_puts_the_change_of_prediction_in_numbers(hungry, thirsty):
    text = "".join(audit_html(cross_html(hungry, thirsty, 0.03, 0.004)).text)
    assert text == "A predicts ' a' (20%); B predicts ' water' (20%). B gives ' a' 3%; A gives ' water' 0.4%."


def test_the_cross_block_says_not_known_for_a_missing_probability(hungry, thirsty):
    text = "".join(audit_html(cross_html(hungry, thirsty, None, None)).text)
    assert text.endswith("B gives ' a' not known; A gives ' water' not known.")


def test_the_cross_block_escapes_the_tokens(hungry, hostile):
    html = cross_html(hostile, hungry, 0.5, None)
    audit_html(html)
    assert "' him'" in "".join(audit_html(html).text)


def test_importing_the_comparisons_html_costs_no_matplotlib():
    code = "import sys, attn.views.compare_difference; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_alignment_that_pairs_different_tokens_is_refused(hungry, thirsty):
    wrong = [(i, i) for i in range(hungry.num_tokens)]  # ' hungry' with ' thirsty'
    with pytest.raises(ValueError, match="pairs different tokens"):
        difference_html(hungry, thirsty, wrong, VIEW)


def test_an_alignment_that_skips_a_token_is_refused(hungry, thirsty):
    skipping = [e for e in align(hungry, thirsty) if e != (None, 4)]
    with pytest.raises(ValueError, match="every token of both prompts"):
        compare_svg(hungry, thirsty, skipping, VIEW)
