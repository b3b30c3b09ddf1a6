"""The line diagram draws every token whenever the labels fit legibly (attn/views/diagram.py,
laid out by attn/views/layout.py): the lab's artist passage in full, long prompts reduced to
the most attended."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path

from attn.compute.forward import analyze
from attn.views.diagram import line_diagram, line_diagram_html, line_svg
from attn.views.drawing import to_svg
from attn.views.labels import visible
from attn.views.layout import LEGIBLE_PT
from attn.views.palette import BLUE, GRAY
from attn.views.view import View
from conftest import ROOT
from helpers import made_up

ARTIST = json.loads((ROOT / "examples.json").read_text(encoding="utf-8"))[2]["prompt"]


@pytest.fixture(scope="module")
def artist(bundled):
    analysis = analyze(bundled, ARTIST)
    assert analysis.num_tokens == 37  # with <BOS>: the lab's own example
    return analysis


def texts(svg: bytes) -> list[tuple[str, float, float, str]]:
    """(text, x, baseline y, style) of every <text> in the SVG."""
    return [(el.text or "", float(el.get("x")), float(el.get("y")), el.get("style", ""))
            for el in ET.fromstring(svg).iter() if el.tag.endswith("text")]


def line_ends(svg: bytes) -> list[float]:
    """x of the lower (input) end of every attention line."""
    ends = []
    for el in ET.fromstring(svg).iter():
        style = el.get("style", "")
        if el.tag.endswith("path") and (BLUE in style or GRAY in style):
            x0, y0, x1, y1 = map(float, re.findall(r"-?\d+(?:\.\d+)?", el.get("d"))[:4])
            ends.append(x0 if y0 > y1 else x1)
    return ends


def font_size(style: str) -> float:
    return float(re.search(r"font-size: ([\d.]+)px", style).group(1))


def test_the_artist_passage_draws_all_37_input_labels_and_hides_none(artist):
    svg = line_svg(artist, View(layer=12)).data
    drawn = Counter(text for text, *_ in texts(svg))
    inputs = Counter(visible(t, 9) for t in artist.tokens)
    outputs = Counter(visible(t, 9) for t in [*artist.tokens[1:], artist.next_token])
    assert not (inputs + outputs) - drawn  # every label of both rows, as text
    assert "hidden" not in "".join(drawn) and "Showing" not in "".join(drawn)


def test_each_artist_token_sits_under_its_own_line(artist):
    svg = line_svg(artist, View(layer=12)).data
    ends = line_ends(svg)
    assert len(ends) == artist.num_tokens
    below = [(x, y) for _, x, y, _ in texts(svg) if y > 0.6 * max(y for *_, y, _ in texts(svg))]
    for x in ends:
        assert sum(abs(lx - x) < 0.01 for lx, _ in below) == 1, f"no single input label under x={x}"


def test_no_two_artist_labels_touch(artist):
    """Measured by matplotlib's own text layout (kerning included), not by the layout's
    estimate: labels on one line of text never overlap."""
    rows: dict[float, list[tuple[float, float]]] = {}
    for text, x, y, style in texts(line_svg(artist, View(layer=12)).data):
        if "text-anchor: middle" in style and "font-size: 12px" not in style:  # token labels, not titles
            width = text_to_path.get_text_width_height_descent(
                text, FontProperties(size=font_size(style), weight="bold" if "700" in style else "normal"),
                ismath=False)[0]
            rows.setdefault(round(y, 1), []).append((x - width / 2, x + width / 2))
    assert len(rows) == 4  # Output and Input, each in two staggered rows
    for spans in rows.values():
        spans.sort()
        assert all(left[1] < right[0] for left, right in zip(spans, spans[1:]))


def test_the_page_never_shows_a_label_below_7_pt(artist):
    for view in (View(layer=12), View(layer=3, show_all=True)):
        svg = line_svg(artist, view)
        html = line_diagram_html(svg, view)
        smallest = float(re.search(r"min-width:(\d+)px", html).group(1))
        labels = {font_size(style) for text, _, _, style in texts(svg.data) if text.strip() == "artist"}
        assert labels == {svg.label_pt} and svg.label_pt >= 9
        assert smallest / svg.width_px * svg.label_pt >= LEGIBLE_PT - 0.01


def test_a_2048_token_prompt_keeps_the_24_most_attended_and_says_so():
    long = made_up([f" w{i}" for i in range(2047)])
    fig = line_diagram(long, View(layer=0))
    drawn = "".join(text for text, *_ in texts(to_svg(fig)))
    assert "Showing 24 of 2048 tokens" in drawn and "hidden" in drawn and "⋯" in drawn
    assert fig.get_figwidth() <= 16


def test_whether_every_token_is_drawn_depends_on_the_labels_not_the_count():
    short = made_up([" a"] * 60)
    wide = made_up([" WWWWWWWW"] * 60)
    assert "Showing" not in to_svg(line_diagram(short, View(layer=0))).decode()
    assert "Showing 24 of 61 tokens" in to_svg(line_diagram(wide, View(layer=0))).decode()


def test_max_columns_still_forces_the_reduction(artist):
    svg = to_svg(line_diagram(artist, View(layer=12), max_columns=24)).decode()
    assert "Showing 24 of 37 tokens" in svg


@pytest.mark.parametrize("case", ["typed", "generated", "hostile", "compare"])
def test_labels_written_directly_are_the_bytes_matplotlib_writes(case, monkeypatch):
    """The labels skip matplotlib's per-label draw_text for speed; the SVG must not change:
    plain, <BOS> gray italic, the boxed bold prediction, purple italic generated tokens,
    markup and ampersands, the comparison's orange boxes."""
    from dataclasses import replace

    from attn.compute.compare import align
    from attn.views import drawing
    from attn.views.compare_diagram import compare_svg

    words = [" Jide", " was", " <b>thirsty</b>", " &", ' "so"', " she", " went"]
    a = made_up(words)
    if case == "generated":
        a = replace(a, generated_from=5)

    def draw() -> bytes:
        if case == "compare":
            b = made_up([*words[:2], " hungry", *words[3:]], seed=3)
            svg = compare_svg(a, b, align(a.tokens, b.tokens), View(layer=1)).data
        else:
            svg = line_svg(a, View(layer=1, show_all=case == "hostile")).data
        return re.sub(rb"<dc:date>[^<]*</dc:date>", b"", svg)  # the clock, not the drawing

    fast = draw()
    monkeypatch.setattr(drawing, "FAST_TEXT", False)
    assert fast == draw()
    assert fast.count(b"<text") > 2 * len(words)
