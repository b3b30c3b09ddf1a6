""""What the numbers say" (attn/views/readings.py, readings_pair.py): every paragraph is
computed from the analysis on screen, so another prompt or another view gives another
paragraph, and its numbers are the analysis's own. The bundled model, no gradio."""

from __future__ import annotations

import re

import numpy as np
import pytest

from attn.compute.profiles import Profiles, profile_similarity, uniform_entropy
from attn.views.readings import NEAR, Screen, depth, layer_list, local_far, overview_reading, said_by, sentences
from attn.views.readings_pair import ablation, alike, comparison
from attn.views.view import View
from helpers import ARTIST, HUNGRY, THIRSTY, audit_html, engine_with

RIVER = ("The river rose quickly after three days of rain. Farmers moved their animals to higher ground before "
         "nightfall. By morning, the water had covered most of the")
LAYER = View(layer=12)


@pytest.fixture(scope="module")
def engine(bundled):
    return engine_with(bundled)


def analysed(engine, prompt):
    return engine.analyze(prompt, "gemma-3-270m")


def text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&#x27;", "'")


def test_a_different_prompt_gives_a_different_paragraph(engine):
    hungry, thirsty = depth(Screen(analysed(engine, HUNGRY), LAYER)), depth(Screen(analysed(engine, THIRSTY), LAYER))
    assert hungry != thirsty
    assert "' hungry'" in text(hungry) and "' thirsty'" in text(thirsty)


def test_a_different_view_gives_a_different_paragraph(engine):
    analysis = analysed(engine, ARTIST)
    assert depth(Screen(analysis, View(layer=12))) != depth(Screen(analysis, View(layer=2)))
    assert depth(Screen(analysis, View(layer=12))) != depth(Screen(analysis, View(layer=12, head=1)))


def test_depth_names_the_prediction_and_the_layers_of_lowest_and_highest_entropy(engine):
    analysis = analysed(engine, HUNGRY)
    out = text(depth(Screen(analysis, LAYER)))
    entropy = analysis.profiles.entropy.mean(axis=1)
    assert f"predicts {analysis.next_token!r}" in out
    assert f"most focused at layer {int(np.argmin(entropy))} (entropy {entropy.min():.2f} nats)" in out
    assert f"most spread at layer {int(np.argmax(entropy))} ({entropy.max():.2f} nats)" in out


def test_depth_counts_the_layers_where_the_top_token_changes(engine):
    analysis = analysed(engine, ARTIST)
    mean = analysis.last_row.mean(axis=1)
    tops = np.argmax(mean[:, 1:], axis=1)
    changes = int(np.count_nonzero(tops[1:] != tops[:-1]))
    assert f"changes {changes} time" in text(depth(Screen(analysis, LAYER)))


def test_sentences_quotes_the_analysis_shares(engine):
    analysis = analysed(engine, ARTIST)
    out = text(sentences(Screen(analysis, LAYER)))
    earlier = float(analysis.sentence_share[12, :-1].sum())
    assert f"At layer 12, {earlier:.0%} of the attention, leaving out <BOS>, goes to the 2 earlier sentences" in out
    assert f"S1 {analysis.sentence_share[12, 0]:.0%}" in out


def test_one_sentence_says_so(engine):
    assert "one sentence" in text(sentences(Screen(analysed(engine, THIRSTY), LAYER)))


def test_comparison_names_what_changed_and_both_predictions(engine):
    c = engine.compare(HUNGRY, THIRSTY, "gemma-3-270m")
    out = text(comparison(Screen(c.a, LAYER, comparison=c)))
    assert "What changed: ' hungry' became ' thirsty'" in out
    assert f"predicts {c.a.next_token!r}" in out and f"predicts {c.b.next_token!r}" in out


def test_the_two_prompt_readings_ask_for_a_comparison_without_one(engine):
    analysis = analysed(engine, HUNGRY)
    for reading in (comparison, alike):
        assert "Compare with a second prompt" in text(reading(Screen(analysis, LAYER)))


def test_ablation_asks_for_the_check_then_reads_it(engine):
    analysis = analysed(engine, THIRSTY)
    assert "Press Check by removing tokens" in text(ablation(Screen(analysis, LAYER)))
    ablated = engine.ablate(THIRSTY, "gemma-3-270m")
    worst = min(ablated.deletions, key=lambda d: d.delta)
    out = text(ablation(Screen(analysis, LAYER, ablation=ablated)))
    assert f"Deleting {worst.token!r} changes it most" in out and "Spearman" in out


def test_alike_ranks_the_layers_by_profile_similarity(engine):
    c = engine.compare(ARTIST, RIVER, "gemma-3-270m")
    sim = profile_similarity(c.a.profiles, c.a.num_tokens, c.b.profiles, c.b.num_tokens)
    out = text(alike(Screen(c.a, LAYER, comparison=c)))
    ranked = re.findall(r"(\d+)[GL] (\d\.\d\d)", out.split("most alike first:")[1])
    assert [int(layer) for layer, _ in ranked] == list(np.argsort(-sim, kind="stable"))
    assert f"regardless of the text are {int(np.argmax(sim))} " in out


def test_profile_similarity_is_one_minus_the_mean_absolute_difference():
    ones = np.ones((2, 2), dtype=np.float32)
    a = Profiles(bos=ones * 0.5, previous=ones * 0.2, entropy=ones * uniform_entropy(5) * 0.5)
    b = Profiles(bos=ones * 0.5, previous=ones * 0.5, entropy=ones * uniform_entropy(9) * 0.2)
    np.testing.assert_allclose(profile_similarity(a, 5, a, 5), 1.0)
    np.testing.assert_allclose(profile_similarity(a, 5, b, 9), 1 - (0 + 0.3 + 0.3) / 3, atol=1e-6)


def test_local_far_states_its_limits_and_the_value_weighted_number(engine):
    analysis = analysed(engine, ARTIST)
    out = text(local_far(Screen(analysis, LAYER)))
    assert "not an explanation" in out and "Check by removing tokens" in out and "Value-weighted" in out
    shares = analysis.last_row.mean(axis=1)[:, 1:]
    near = shares[:, -NEAR:].sum(axis=1) / shares.sum(axis=1)
    assert f"the layers that stay nearby are {int(np.argmax(near))} ({near.max():.0%})" in out


def test_local_far_on_a_short_prompt_says_nothing_is_far(engine):
    assert "nothing is far back" in text(local_far(Screen(analysed(engine, "Hello there"), LAYER)))


def test_overview_adds_the_sentences_for_several(engine):
    assert "earlier sentence" in text(overview_reading(Screen(analysed(engine, RIVER), LAYER)))
    assert "earlier sentence" not in text(overview_reading(Screen(analysed(engine, THIRSTY), LAYER)))


def test_readings_escape_what_the_prompt_holds(engine):
    analysis = analysed(engine, "<b>Bold</b> claims. <script>x</script> and <img src=y onerror=z> then")
    for reading in (depth, sentences, local_far, overview_reading):
        html = reading(Screen(analysis, LAYER))
        assert "<script" not in html and "<img" not in html
        audit_html(html.replace("<p", "<div").replace("</p>", "</div>"))


def test_the_model_on_screen_is_named_not_the_labs(engine):
    assert "gemma-3-270m" in text(said_by(analysed(engine, HUNGRY))) and "1B" in text(said_by(analysed(engine, HUNGRY)))


def test_layer_lists_read_as_ranges():
    assert layer_list([0, 1, 2, 5, 7, 8]) == "0–2, 5, 7 and 8"
    assert layer_list([3]) == "3"
