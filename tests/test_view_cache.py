"""Rendered views, cached (attn/views/view_cache.py), and the likely next views drawn ahead
of time; the line diagram's geometry and the heatmap's shared grid."""

from __future__ import annotations

import dataclasses
import re
import time
import xml.etree.ElementTree as ET

import pytest

from attn.compute import generation
from attn.compute.forward import analyze
from attn.views import words
from attn.views.diagram import line_diagram_html
from attn.views.palette import BLUE, GRAY, PREDICTED
from attn.views.view import View
from attn.views.view_cache import ViewCache, likely_next
from helpers import THIRSTY


@pytest.fixture(scope="module")
def thirsty(thirsty_analysis):
    return thirsty_analysis  # conftest's: the bundled model's analysis of THIRSTY, made once


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_line_diagram_is_well_formed_svg_with_the_tokens_as_text(thirsty):
    svg = ViewCache(prefetch=False).line_svg(thirsty, View(layer=12)).data
    root = ET.fromstring(svg)
    texts = "".join(root.itertext())
    assert root.tag.endswith("svg")
    assert "thirsty" in texts and "water" in texts and "Layer 12" in texts


def test_a_repeated_view_is_drawn_once(thirsty):
    figures = ViewCache(prefetch=False)
    first = figures.line_svg(thirsty, View(layer=3))
    again = figures.line_svg(thirsty, View(layer=3))
    assert again is first and figures.rendered == 1


@pytest.mark.slow  # waits out a 2 s settle on purpose, so that the second request surely comes first
def test_the_prefetcher_follows_the_latest_view_and_drops_the_one_left_behind(thirsty):
    """Mean over heads at layer 5, then at once max over heads: the background drawing
    serves the view on screen (max, every layer) and never the one the person left."""
    figures = ViewCache()
    figures.settle_seconds = 2.0  # the second request surely comes before any drawing starts
    figures.line_svg(thirsty, View(layer=5))
    shown = View(layer=5, head="max")
    figures.line_svg(thirsty, shown)
    assert wait_until(lambda: all(figures._key(thirsty, v) in figures.cache for v in likely_next(thirsty, shown)))
    left = [View(layer=layer) for layer in range(thirsty.num_layers) if layer != 5]
    assert not any(figures._key(thirsty, v) in figures.cache for v in left)
    assert figures.rendered == 2 + len(likely_next(thirsty, shown)) - 1  # mean at layer 5 was already drawn


def test_the_figure_says_its_width_and_the_page_shows_it_at_that_size(thirsty):
    """The <img> is as wide as the SVG says it is (pt -> CSS px), never wider, and no
    narrower than 60% of that."""
    figures = ViewCache(prefetch=False)
    for view in (View(layer=0), View(layer=7, head=2, show_all=True), View(layer=12, bos="exclude")):
        svg = figures.line_svg(thirsty, view)
        declared = float(re.search(rb'<svg[^>]*\swidth="([\d.]+)pt"', svg.data[:2000]).group(1)) * 4 / 3
        assert svg.width_px == pytest.approx(declared, abs=1e-3)
        html = line_diagram_html(svg, view)
        assert f"max-width:{declared:.0f}px;min-width:{0.6 * declared:.0f}px" in html


def test_after_one_view_the_other_layers_are_drawn_in_the_background(thirsty):
    figures = ViewCache()
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


# ---- the line diagram's geometry -------------------------------------------------------

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def svg_lines(svg: bytes) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """(stroke colour, top end, bottom end) of every attention line (SVG y grows down)."""
    out = []
    for el in ET.fromstring(svg).iter():
        style = el.get("style", "")
        if el.tag.endswith("path") and "stroke-width" in style and (BLUE in style or GRAY in style):
            x0, y0, x1, y1 = map(float, NUMBER.findall(el.get("d"))[:4])
            colour = "blue" if BLUE in style else "gray"
            out.append((colour, *sorted([(x0, y0), (x1, y1)], key=lambda p: p[1])))
    return out


def svg_labels(svg: bytes) -> list[tuple[str, float, float, str]]:
    """(text, x, baseline y, style) of every label."""
    return [
        (el.text, float(el.get("x")), float(el.get("y")), el.get("style"))
        for el in ET.fromstring(svg).iter()
        if el.tag.endswith("text")
    ]


def test_every_line_runs_from_the_prediction_to_the_centre_of_its_input_label(thirsty):
    svg = ViewCache(prefetch=False).line_svg(thirsty, View(layer=12)).data
    labels, lines = svg_labels(svg), svg_lines(svg)
    (pred,) = [lb for lb in labels if PREDICTED in lb[3]]  # the predicted token, green and bold
    assert pred[0] == " water" and "font-weight: 700" in pred[3] and "text-anchor: middle" in pred[3]
    inputs = [lb for lb in labels if lb[2] > pred[2] + 50 and "text-anchor: middle" in lb[3]]
    assert len(lines) == thirsty.num_tokens  # one line per prompt token, BOS included
    for colour, top, bottom in lines:
        assert top[0] == pytest.approx(pred[1], abs=0.01)
        below = [lb for lb in inputs if lb[1] == pytest.approx(bottom[0], abs=0.01) and lb[2] > bottom[1]]
        assert len(below) == 1, f"no label under the line ending at x={bottom[0]}"
        assert (colour == "gray") == (below[0][0] == "<BOS>")


def test_line_widths_follow_the_weights_the_lab_way(thirsty):
    from attn.views.view import row

    view = View(layer=12)
    svg = ViewCache(prefetch=False).line_svg(thirsty, view).data
    widths = sorted(
        float(re.search(r"stroke-width: ([\d.]+)", el.get("style")).group(1))
        for el in ET.fromstring(svg).iter()
        if el.tag.endswith("path") and "stroke-width" in el.get("style", "") and "#e6f4ea" not in el.get("style")
    )
    expected = sorted(5.0 * float(w) for w in row(thirsty, view) if w > 0)  # min 0, max 5
    assert widths == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_the_png_export_draws_the_same_diagram(thirsty):
    import io

    import numpy as np
    from PIL import Image

    from attn.views.diagram import line_diagram
    from attn.views.drawing import to_png

    fig = line_diagram(thirsty, View(layer=12))
    image = np.asarray(Image.open(io.BytesIO(to_png(fig))).convert("RGB")).astype(int)
    assert image.shape[:2] == (int(fig.get_figheight() * 100), int(fig.get_figwidth() * 100))
    bluish = (image[..., 2] - image[..., 0] > 60).sum()  # the attention lines
    greenish = ((image[..., 1] - image[..., 0] > 60) & (image[..., 1] - image[..., 2] > 30)).sum()  # the prediction
    dark = (image.sum(axis=-1) < 200).sum()  # black label text
    assert bluish > 200 and greenish > 20 and dark > 500


# ---- the heatmap: one grid per head and BOS mode, the layer mark redrawn ----------------


def test_the_heatmap_grid_is_built_once_for_every_layer_and_the_mark_moves(thirsty):
    figures = ViewCache(prefetch=False)
    at3 = figures.heatmap(thirsty, View(layer=3))
    at4 = figures.heatmap(thirsty, View(layer=4))
    assert len(figures.cache) == 1  # one grid, shared by both layers
    grid = figures._grid(thirsty, View(layer=0))
    assert grid in at3 and grid in at4
    for html, layer in ((at3, 3), (at4, 4)):
        assert f'class="attn-hm-current" style="position:absolute;left:0;top:{16 * layer}px' in html
        assert re.findall(r'"attn-hm-layer" data-layer="(\d+)"[^>]*background:#fde7d4', html) == [str(layer)]
        assert re.findall(r'"attn-lens" data-layer="(\d+)"[^>]*background:#fde7d4', html) == [str(layer)]
    figures.heatmap(thirsty, View(layer=4, head="max"))
    assert len(figures.cache) == 2


@pytest.mark.slow  # 240 figures on 4 threads, to catch a race: 2.5 s of CPU
def test_figures_drawn_on_many_threads_at_once_keep_their_labels_as_text(thirsty):
    """A request and the prefetcher draw at the same time; matplotlib's SVG settings are
    process-wide, and a race once turned a figure's labels into glyph paths."""
    from concurrent.futures import ThreadPoolExecutor

    from attn.views.diagram import line_diagram
    from attn.views.drawing import to_svg

    def draw(i):
        svg = to_svg(line_diagram(thirsty, View(layer=i % thirsty.num_layers, head=i % 3)))
        return len(svg_labels(svg))

    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(draw, range(240)))
    assert min(counts) >= 2 * thirsty.num_tokens  # both rows of labels, every time


# ---- a drawing is keyed by what it shows, not by the prompt's text alone ---------------


@pytest.fixture(scope="module")
def step(bundled):
    """Step 2 of the lab's prompt continued greedily: its `prompt` is the typed text plus
    the 2 tokens generated before it."""
    return generation.generate(bundled, THIRSTY, 3).step_analysis(2)


def test_a_generation_step_and_the_typed_prompt_of_its_text_are_drawn_apart(bundled, step):
    typed = analyze(bundled, step.prompt)  # the same text, typed
    assert typed.prompt == step.prompt and typed.generated_from is None
    figures = ViewCache(prefetch=False)
    view = View(layer=5)
    assert figures.line_svg(typed, view).data != figures.line_svg(step, view).data
    assert figures.heatmap(typed, view) != figures.heatmap(step, view)
    assert figures.rendered == 2 and "generated" in figures.heatmap(step, view)


def test_another_next_token_of_the_same_text_is_drawn_apart(step):
    """A sampled generation reaching the same text can predict another token."""
    other = dataclasses.replace(step, next_token=" He", next_token_id=step.next_token_id + 1)
    figures = ViewCache(prefetch=False)
    first, second = figures.line_svg(step, View(layer=5)), figures.line_svg(other, View(layer=5))
    assert first is not second and figures.rendered == 2 and "He" in second.data.decode()


def test_words_and_pieces_are_drawn_apart(thirsty):
    figures = ViewCache(prefetch=False)
    view = View(layer=5)
    pieces, whole = figures.line_svg(thirsty, view), figures.line_svg(words.merged(thirsty), view)
    assert pieces.data != whole.data and b">Jide<" in whole.data and b">Jide<" not in pieces.data
    assert ">Jide<" in figures.heatmap(words.merged(thirsty), view) and ">Jide<" not in figures.heatmap(thirsty, view)


def test_words_merged_again_are_served_from_the_cache(thirsty):
    """The page merges on every slider move: a new object with the same numbers is a hit."""
    figures = ViewCache(prefetch=False)
    first = figures.line_svg(words.merged(thirsty), View(layer=5))
    again = figures.line_svg(words.merged(thirsty), View(layer=5))
    assert again is first and figures.rendered == 1
