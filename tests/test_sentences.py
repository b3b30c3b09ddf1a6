"""Sentences (attn/compute/profiles.py): the prompt is cut after every token whose text,
stripped, ends in ".", "!" or "?"; the rest after the last cut is the last sentence and an
empty tail is dropped. Ranges are [start, end) over positions 1..T-1 (<BOS> is in none).

The rule is exact, not a sentence parser: "Dr." and "3.14" cut too, as the definition says.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from attn.compute.encode import encode
from attn.compute.profiles import sentence_share, split_sentences
from attn.views.words import merged
from helpers import made_up


def sentences_of(tokenizer, prompt: str) -> list[str]:
    """The prompt's sentences as text, through the bundled model's own tokens."""
    tokens = encode(tokenizer, prompt).tokens
    return ["".join(tokens[a:b]) for a, b in split_sentences(tokens)]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("Dr. Smith went home. He slept", ["Dr.", " Smith went home.", " He slept"]),
    ("Wait... what?! No way", ["Wait...", " what?!", " No way"]),
    ("no punctuation at all", ["no punctuation at all"]),
    ("Hi", ["Hi"]),
    ("It ended.", ["It ended."]),  # ends in punctuation: no empty last sentence
    ("Stop!\nGo.", ["Stop!", "\nGo."]),
    ('He said "yes." Then left', ['He said "yes." Then left']),  # '."' ends in a quote, not a full stop
])
def test_split_on_the_bundled_tokenizer(gemma_tokenizer, prompt, expected):
    assert sentences_of(gemma_tokenizer, prompt) == expected


def test_ranges_tile_positions_1_to_t_minus_1():
    tokens = ["<BOS>", "A", ".", " B", "?!", " C", " d"]
    assert split_sentences(tokens) == [(1, 3), (3, 5), (5, 7)]


def test_a_one_token_prompt_is_one_sentence():
    assert split_sentences(["<BOS>", "Hi"]) == [(1, 2)]
    assert split_sentences(["<BOS>", "."]) == [(1, 2)]


def test_a_token_that_is_only_punctuation_and_space_still_cuts():
    assert split_sentences(["<BOS>", "Go", " .\n", "Now"]) == [(1, 3), (3, 4)]


def test_whitespace_only_tokens_never_cut():
    assert split_sentences(["<BOS>", "A", "\n\n", "B"]) == [(1, 4)]


def test_bos_text_is_not_a_sentence_end_and_never_in_a_sentence():
    assert split_sentences(["<BOS>"]) == []


def test_share_leaves_out_bos_and_renormalises():
    # Two layers, two heads, T = 5: <BOS>, then sentences [1, 3) and [3, 5).
    row = np.array([[[0.5, 0.1, 0.1, 0.2, 0.1], [0.3, 0.3, 0.1, 0.2, 0.1]],
                    [[0.0, 0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0, 0.0]]], dtype=np.float32)
    share = sentence_share(row, [(1, 3), (3, 5)])
    assert share.shape == (2, 2) and share.dtype == np.float32
    np.testing.assert_allclose(share[0], [0.3 / 0.6, 0.3 / 0.6], atol=1e-6)  # mean <BOS> 0.4
    np.testing.assert_allclose(share[1], [0.75, 0.25], atol=1e-6)


def test_a_layer_with_everything_on_bos_has_no_share():
    row = np.zeros((1, 2, 3), dtype=np.float32)
    row[..., 0] = 1.0
    assert np.isnan(sentence_share(row, [(1, 3)])).all()


def test_words_keep_the_sentences_and_their_shares():
    """Merging pieces into words maps each sentence to its words; the shares are unchanged
    where every sentence end closes a word."""
    analysis = made_up(["J", "ide", " ate", ".", " She", " slept", "."])
    tokens = analysis.tokens
    sentences = split_sentences(tokens)
    analysis = replace(analysis, sentences=sentences, sentence_share=sentence_share(analysis.last_row, sentences))
    words = merged(analysis)
    assert ["".join(words.tokens[a:b]) for a, b in words.sentences] == ["Jide ate.", " She slept."]
    np.testing.assert_allclose(words.sentence_share, analysis.sentence_share, atol=1e-6)


# ---- the views: the strip beside the heatmap, the marks in the diagram and the highlighted tokens ----


@pytest.fixture(scope="module")
def artist(bundled):
    from attn.compute.forward import analyze
    from helpers import ARTIST

    return analyze(bundled, ARTIST)


def test_the_strip_gives_every_layer_each_sentences_share(artist):
    import re

    from attn.views.sentence_strip import sentence_strip_html
    from attn.views.view import View

    html = sentence_strip_html(artist, View(layer=12))
    rows = re.findall(r"<tr[^>]*><th scope=\"row\"[^>]*>(\d+) [GL]</th>(.*?)</tr>", html)
    assert [int(layer) for layer, _ in rows] == list(range(artist.num_layers))
    for layer, cells in rows:
        shown = [int(v) for v in re.findall(r">(\d+)</td>", cells)]
        assert shown == [round(float(x) * 100) for x in artist.sentence_share[int(layer)]]
    assert html.count('scope="col"') == 1 + len(artist.sentences)  # "layer", then S1..S3


def test_a_one_sentence_prompt_gets_a_line_not_a_strip(thirsty_analysis):
    from attn.views.sentence_strip import sentence_strip_html

    html = sentence_strip_html(thirsty_analysis)
    assert "<table" not in html and "One sentence" in html


def test_the_line_diagram_marks_each_sentence_end(artist):
    from attn.views.diagram import line_diagram
    from attn.views.drawing import Diagram
    from attn.views.palette import SENTENCE
    from attn.views.view import View

    fig = line_diagram(artist, View(layer=12))
    diagram = next(a for a in fig.artists if isinstance(a, Diagram))
    assert diagram.colors.count(SENTENCE) == len(artist.sentences) - 1
    assert any("where a sentence ends (3 sentences)" in label.text for label in diagram.labels)
    single = line_diagram(replace(artist, sentences=[(1, artist.num_tokens)]), View(layer=12))
    assert next(a for a in single.artists if isinstance(a, Diagram)).colors.count(SENTENCE) == 0


def test_the_highlighted_tokens_mark_each_sentence_end_before_the_next_sentence(artist):
    import re

    from attn.views.highlight import token_html
    from attn.views.view import View

    html = token_html(artist, View(layer=12))
    after = re.findall(r'class="attn-sent"[^>]*></span><span class="attn-tok" data-pos="(\d+)"', html)
    assert [int(p) for p in after] == [start for start, _ in artist.sentences[1:]]
    assert "end of a sentence (3 sentences)" in html


def test_a_prompt_of_many_sentences_keeps_the_strip_narrow():
    import re

    from attn.views.sentence_strip import MAX_COLUMNS, sentence_strip_html

    analysis = made_up([" One."] * 30 + [" end"])
    sentences = split_sentences(analysis.tokens)
    analysis = replace(analysis, sentences=sentences, sentence_share=sentence_share(analysis.last_row, sentences))
    html = sentence_strip_html(analysis)
    heads = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', html)
    assert heads == ["layer", f"S1–S{31 - MAX_COLUMNS + 1}"] + [f"S{k}" for k in range(31 - MAX_COLUMNS + 2, 32)]
    first = [int(v) for v in re.findall(r">(\d+)</td>", html.split("</tr>")[1])]  # layer 0's row
    expected = [analysis.sentence_share[0, :31 - MAX_COLUMNS + 1].sum()] + list(analysis.sentence_share[0, -11:])
    assert first == [round(float(x) * 100) for x in expected]


def test_the_strip_shows_a_hostile_sentence_as_text():
    from html.parser import HTMLParser

    from attn.views.sentence_strip import sentence_strip_html

    analysis = made_up(["<script>alert(1)</script>", ".", ' "><img src=x onerror=alert(2)>', "!", " end"])
    sentences = split_sentences(analysis.tokens)
    analysis = replace(analysis, sentences=sentences, sentence_share=sentence_share(analysis.last_row, sentences))
    html = sentence_strip_html(analysis)
    tags = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)
            assert not any(name.startswith("on") or name == "src" for name, _ in attrs), attrs

    Tags().feed(html)
    assert set(tags) <= {"div", "b", "table", "caption", "thead", "tbody", "tr", "th", "td"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;." in html
