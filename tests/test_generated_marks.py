"""Generated tokens marked in every view: a generation step's keys include tokens the model
wrote itself in earlier steps, and a reader must tell them from the typed prompt. The line
diagram's labels and the heatmap's ticks are purple italic, the highlighted tokens are
underlined (dotted purple) and say "generated" on hover; each view says what the mark
means. A typed prompt draws exactly as before."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attn.compute import forward as inference
from attn.compute import generation
from attn.compute.analysis import Analysis, TokenProb
from attn.views import words
from attn.views.diagram import line_svg
from attn.views.heatmap import heatmap_html
from attn.views.highlight import token_html
from attn.views.palette import GENERATED, PREDICTED
from attn.views.view import View
from helpers import THIRSTY, audit_html

VIEW = View(layer=5)


@pytest.fixture(scope="module")
def gen(bundled):
    """The lab's prompt continued greedily for 3 tokens (" water", ".", " She")."""
    return generation.generate(bundled, THIRSTY, 3)


@pytest.fixture(scope="module")
def step(gen):
    """Step 2: keys <BOS> + the prompt + 2 generated tokens, predicting the third."""
    step = gen.step_analysis(2)
    assert step.tokens[step.generated_from:] == gen.generated[:2]
    return step


@pytest.fixture(scope="module")
def typed(bundled):
    return inference.analyze(bundled, THIRSTY)


def svg_labels(svg: bytes) -> list[tuple[str, str]]:
    """(text, style) of every <text> in the SVG."""
    return [(el.text or "", el.get("style", "")) for el in ET.fromstring(svg).iter() if el.tag.endswith("text")]


def marked(style: str) -> bool:
    return f"fill: {GENERATED}" in style and "italic" in style


def without_date(svg: bytes) -> bytes:
    return re.sub(rb"<dc:date>.*?</dc:date>", b"", svg)


def ticks(fragment: str) -> list[tuple[str, str]]:
    """(style, text) of each token tick under the heatmap."""
    return re.findall(r'transform-origin:0 0;white-space:pre;font-size:11px;([^"]*)">([^<]*)</span>', fragment)


def highlighted(fragment: str) -> list[tuple[str, int, str]]:
    """(class, position, title) of each token of the highlighted view."""
    return [(cls, int(pos), title) for cls, pos, title in
            re.findall(r'<span class="(attn-tok[^"]*)" data-pos="(\d+)" data-weight="[^"]*" title="([^"]*)"', fragment)]


# ---- the line diagram ------------------------------------------------------------------------------


def test_the_line_diagram_draws_generated_tokens_purple_italic(step):
    labels = svg_labels(line_svg(step, VIEW).data)
    purple = {text for text, style in labels if marked(style)}
    assert {" water", "."} <= purple  # as inputs, and " water" and "." also as outputs
    assert not purple & {" for", " thirsty", "J", "ide", " She"}


def test_the_prediction_keeps_its_green_box(step):
    labels = svg_labels(line_svg(step, VIEW).data)
    (style,) = [style for text, style in labels if text == step.next_token]
    assert f"fill: {PREDICTED}" in style and "700" in style and "italic" not in style


def test_the_line_diagram_says_what_purple_means(step):
    notes = [text for text, style in svg_labels(line_svg(step, VIEW).data) if "generated" in text]
    assert notes == ["Purple italic: the 2 tokens the model generated in earlier steps (not typed)."]


def test_the_line_diagram_of_words_marks_generated_words(step):
    labels = svg_labels(line_svg(words.merged(step), VIEW).data)
    assert any(marked(style) for text, style in labels if text == " water")
    assert not any(marked(style) for text, style in labels if text == "Jide")
    assert any(text.startswith("Purple italic: the 2 words the model generated") for text, _ in labels)


# ---- the highlighted tokens ------------------------------------------------------------------------


def test_generated_tokens_are_underlined_and_say_so_on_hover(step):
    fragment = token_html(step, VIEW)
    audit_html(fragment)
    spans = highlighted(fragment)
    assert [pos for _, pos, _ in spans] == list(range(step.num_tokens))
    for cls, pos, title in spans:
        generated = pos >= step.generated_from
        assert ("attn-gen" in cls.split()) == generated == (", generated," in title), (pos, cls, title)
    assert f"underline dotted {GENERATED}" in fragment


def test_the_highlighted_view_s_legend_names_the_mark(step, typed):
    assert "written by the model in earlier steps, not typed" in token_html(step, VIEW)
    assert "written by the model" not in token_html(typed, VIEW)


def test_the_highlighted_text_is_still_the_text(step):
    """Typed prompt and generated text, exactly, in order."""
    fragment = token_html(step, VIEW)
    texts = re.findall(r'<span class="attn-tok[^"]*" data-pos="(?!0")\d+"[^>]*>([^<]*)</span>', fragment)
    assert "".join(texts) == step.prompt == THIRSTY + " water."


# ---- the heatmap -----------------------------------------------------------------------------------


def test_the_heatmap_ticks_of_generated_tokens_are_purple_italic(step):
    fragment = heatmap_html(step, VIEW)
    audit_html(fragment)
    found = ticks(fragment)
    assert len(found) == step.num_tokens
    for j, (style, _) in enumerate(found):
        assert (style == f"color:{GENERATED};font-style:italic") == (j >= step.generated_from), (j, style)
    assert "Purple italic" in fragment and "(#10, generated)" in fragment


def test_past_the_labelled_grid_the_heatmap_says_how_many_were_generated():
    tokens = ["<BOS>"] + [f" w{i}" for i in range(199)]
    long = made_up(tokens, generated_from=197)
    fragment = heatmap_html(long, VIEW)
    audit_html(fragment, images=True)
    assert "The last 3 were generated." in fragment


# ---- a typed prompt, and a step with nothing generated yet ---------------------------------------


def test_a_typed_prompt_has_no_generated_marks(typed):
    assert GENERATED not in line_svg(typed, VIEW).data.decode()
    for fragment in (token_html(typed, VIEW), heatmap_html(typed, VIEW)):
        assert GENERATED not in fragment and "attn-gen" not in fragment and "generated" not in fragment


def test_a_step_with_nothing_generated_yet_draws_as_the_same_analysis_unmarked(gen):
    first = gen.step_analysis(0)
    plain = dataclasses.replace(first, generated_from=None)
    assert first.generated_from == first.num_tokens  # its keys are the typed prompt only
    for view in (VIEW, View(layer=0, head=1, bos="exclude", measure="value")):
        assert without_date(line_svg(first, view).data) == without_date(line_svg(plain, view).data)
        assert token_html(first, view) == token_html(plain, view)
        assert heatmap_html(first, view) == heatmap_html(plain, view)


def made_up(tokens: list[str], generated_from: int | None) -> Analysis:
    rng = np.random.default_rng(0)
    weights = rng.random((6, 2, len(tokens))).astype(np.float32)
    ends = np.cumsum([0] + [len(t) for t in tokens[1:]]).tolist()
    return Analysis(
        model="made-up", model_source="test", dtype="float32", prompt="".join(tokens[1:]), tokens=tokens,
        token_ids=np.arange(len(tokens), dtype=np.int64), spans=[(0, 0)] + list(zip(ends[:-1], ends[1:])),
        next_token="!", next_token_id=99, top_k=[TokenProb("!", 99, 0.5)], layer_types=["global"] * 6,
        sliding_window=None, num_heads=2, last_row=weights / weights.sum(-1, keepdims=True), full=None,
        generated_from=generated_from,
    )
