"""Rendered line diagrams: cached, and the likely next views drawn ahead of time."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from attn.inference import analyze
from attn.render import FigureCache, likely_next
from attn.weights import View

from conftest import THIRSTY


@pytest.fixture(scope="module")
def thirsty(bundled):
    return analyze(bundled, THIRSTY)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_line_diagram_is_well_formed_svg_with_the_tokens_as_text(thirsty):
    svg = FigureCache(prefetch=False).line_svg(thirsty, View(layer=12))
    root = ET.fromstring(svg)
    texts = "".join(root.itertext())
    assert root.tag.endswith("svg")
    assert "thirsty" in texts and "water" in texts and "Layer 12" in texts


def test_a_repeated_view_is_drawn_once(thirsty):
    figures = FigureCache(prefetch=False)
    first = figures.line_svg(thirsty, View(layer=3))
    again = figures.line_svg(thirsty, View(layer=3))
    assert again is first and figures.rendered == 1


def test_without_prefetch_nothing_else_is_drawn(thirsty):
    figures = FigureCache(prefetch=False)
    figures.line_svg(thirsty, View(layer=3))
    time.sleep(0.5)
    assert figures.rendered == 1 and len(figures.cache) == 1


def test_after_one_view_the_other_layers_are_drawn_in_the_background(thirsty):
    figures = FigureCache()
    figures.line_svg(thirsty, View(layer=5))
    others = [View(layer=layer) for layer in range(thirsty.num_layers)]
    assert wait_until(lambda: all(figures._key(thirsty, v) in figures.cache for v in others))
    drawn = figures.rendered
    figures.line_svg(thirsty, View(layer=6))  # the slider moves: a lookup, no drawing
    assert figures.rendered == drawn


def test_likely_next_views_start_with_the_neighbouring_layers_then_other_modes(thirsty):
    view = View(layer=7, head="mean", bos="gray")
    order = likely_next(thirsty, view)
    assert {order[0].layer, order[1].layer} == {6, 8}
    assert view not in order and len(order) == len(set(order))
    assert View(layer=7, head="max") in order and View(layer=7, head=3) in order
    assert View(layer=7, bos="exclude") in order
    last_layer_move = max(i for i, v in enumerate(order) if v.layer != 7)
    first_mode_change = min(i for i, v in enumerate(order) if v.layer == 7)
    assert last_layer_move < first_mode_change
