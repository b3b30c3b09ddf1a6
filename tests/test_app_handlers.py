"""The page's event handlers, called in process on a page built by app.create_page.

Each handler returns {component: new value} for what it changes; a component left out keeps
its value. A refused request fails no event: a failed Gradio event marks every output
component with an "Error" badge, hiding the last good analysis and the controls a student
needs next. So the handlers never raise: they change only the note under the prompt and the
model status, and say why in a toast (gr.Warning; outside a running app it is a Python
warning, which these tests catch). tests/test_browser.py checks the same on the real page.

What a visitor was shown is held in the visitor's session (attn.web.subject.Shown), so the
views drawn after an analysis never depend on the engine's shared cache still holding it.
"""

from __future__ import annotations

from html import escape

import pytest

from attn import BUNDLED, Engine, PromptError, UnknownModelError
from attn.settings import Settings
from attn.web.subject import Shown, Subject
from helpers import SETTINGS, THIRSTY, engine_with

# Building a page imports gradio (seconds): these tests carry the `app` marker, so that
# collecting the fast subset (-m "not browser and not app and not slow") does not pay for it.
pytestmark = pytest.mark.app

SKIP = {"__type__": "update"}  # what gr.skip() returns: nothing changes
FOX = "The quick brown fox jumps over the"
SHOWN = Shown(Subject(BUNDLED, THIRSTY))  # the last good analysis (its result is not read by a refusal)


def build(settings: Settings, engine: Engine | None = None):
    import app

    return app.create_page(settings, engine=engine)


@pytest.fixture(scope="module")
def real():
    """The page as the app builds it (the registry's models, loaded on demand), no model loaded."""
    return build(SETTINGS)


def gpt2_page(gpt2, **engine_options):
    """A page whose 'bundled' model is the tiny GPT-2: instant analyses, three layers."""
    return build(Settings(models=(BUNDLED,), prefetch=False), engine=engine_with(gpt2, **engine_options))


@pytest.fixture(scope="module")
def tiny(gpt2):
    return gpt2_page(gpt2)


def view(page, shown, layer=1, measure="raw", step=0, by_words=False) -> dict:
    return page.handlers.on_view(shown, step, layer, "Mean over heads", "gray", False, measure, by_words)


def toasts(record) -> list[str]:
    """The gr.Warning messages among the warnings caught (not, say, a ResourceWarning of a GC)."""
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def refused(page, prompt: str, model: str, message: str) -> dict:
    with pytest.warns(UserWarning) as record:
        out = page.handlers.on_analyze(prompt, model, 12, "Mean over heads", SHOWN)
    assert toasts(record) == [message]  # one toast, the message
    ui = page.ui
    assert set(out) == {ui.note, ui.status}  # the last good analysis and the controls stay
    assert message in out[ui.note] and "The views below still show the last analysis." in out[ui.note]
    return out


def test_the_page_publishes_the_six_api_endpoints_and_no_event(real):
    """The events' own endpoints are private, and none takes a public endpoint's name."""
    public = {fn.api_name for fn in real.blocks.fns.values() if fn.api_visibility == "public"}
    assert public == {"analyze", "view", "ablate", "compare", "generate", "stats"}


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_a_blank_prompt_is_refused_at_once_without_loading_a_model(real, prompt):
    refused(real, prompt, BUNDLED, "The prompt is empty: type some text to analyse.")
    assert real.engine.status(BUNDLED)[0] == "not loaded"


def test_an_unknown_model_is_refused_with_a_markup_free_message(real):
    with pytest.raises(UnknownModelError) as info:
        real.engine.analyze("Hello", "<b>gpt-5</b>")
    out = refused(real, "Hello", "<b>gpt-5</b>", escape(str(info.value)))
    assert "<" not in out[real.ui.status] and "Error" not in out[real.ui.status]


def test_an_unavailable_model_is_refused_and_the_status_says_why(real):
    with pytest.warns(UserWarning) as record:
        out = real.handlers.on_analyze("Hello", "gemma-3-1b", 12, "Mean over heads", SHOWN)
    assert "gated: set the HF_TOKEN secret" in toasts(record)[0]
    assert set(out) == {real.ui.note, real.ui.status}
    assert "unavailable" in out[real.ui.status] and "gated" in out[real.ui.note]


def test_a_refusal_shows_markup_in_its_message_as_text(gpt2):
    page = gpt2_page(gpt2, max_tokens=4)
    with pytest.raises(PromptError, match="tokens long \\(with <BOS>\\)") as info:
        page.engine.analyze(FOX, BUNDLED)
    out = refused(page, FOX, BUNDLED, escape(str(info.value)))
    assert "&lt;BOS&gt;" in out[page.ui.note] and "<BOS>" not in out[page.ui.note]


def test_an_analysis_is_held_in_the_session_with_its_subject(tiny):
    ui = tiny.ui
    out = tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")
    shown = out[ui.shown]
    assert shown.subject == Subject(BUNDLED, FOX) and shown.analysis is tiny.engine.cached(FOX, BUNDLED)
    assert set(out) == set(ui.analysis_outputs)
    assert out[ui.note] == ""


def test_what_to_look_for_follows_the_prompt_analysed(tiny):
    """A preset's hint beside its own prompt only: a typed prompt clears it."""
    ui, preset = tiny.ui, tiny.handlers.examples[1]
    assert tiny.handlers.on_analyze(preset["prompt"], BUNDLED, 1, "Mean over heads")[ui.look_for] == \
        f"**What to look for:** {preset['look_for']}"
    assert tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")[ui.look_for] == ""


def test_the_views_draw_after_the_analysis_left_the_shared_cache(gpt2):
    """Another visitor's analysis evicts this one between the analyze event and its views."""
    one = gpt2_page(gpt2).engine.analyze(FOX, BUNDLED).nbytes
    page = gpt2_page(gpt2, cache_bytes=int(one * 1.5))  # room for one analysis of this size
    shown = page.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")[page.ui.shown]
    assert page.engine.cached(FOX, BUNDLED) is not None
    page.handlers.on_analyze(FOX.replace("fox", "cat"), BUNDLED, 1, "Mean over heads")  # as many tokens
    assert page.engine.cached(FOX, BUNDLED) is None
    for layer in (1, 0, 2):  # the view after the click, then controls moved later
        out = view(page, shown, layer=layer)
        assert page.ui.note not in out
        assert f"layer={layer}" in out[page.ui.link_query] and "<img" in out[page.ui.figure]


def test_a_successful_view_leaves_the_note_alone(tiny):
    ui = tiny.ui
    shown = tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")[ui.shown]
    out = view(tiny, shown)
    # The note may be explaining a refused analysis meanwhile; summary and top-k belong to the analysis.
    assert set(out) == {ui.figure, ui.tokens_view, ui.ablation, ui.overview, ui.layer_info, ui.link_query,
                        ui.sentence_strip, ui.profile_grid}
    assert all(isinstance(v, str) and v for v in out.values())


def test_a_measure_the_model_lacks_is_refused_in_the_note_and_the_views_stay(tiny):
    shown = tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")[tiny.ui.shown]
    out = view(tiny, shown, measure="value")
    assert set(out) == {tiny.ui.note}  # GPT-2's fused qkv projection has no v_proj to weigh values by
    assert "Value-weighted attention is not available" in out[tiny.ui.note]


def test_a_view_before_any_analysis_changes_nothing(tiny):
    assert view(tiny, None) == SKIP


def test_checking_by_removing_tokens_before_any_analysis_is_refused_with_a_toast(tiny):
    with pytest.warns(UserWarning) as record:
        out = tiny.handlers.on_ablate(None)
    assert out == SKIP and toasts(record) == ["Analyze one prompt first (without Compare or Continue)."]


def tables(page, shown, as_table: bool, layer=1) -> str:
    return page.handlers.on_tables(shown, 0, layer, "Mean over heads", "gray", False, "raw", False, as_table)


def test_show_as_table_gives_the_view_and_every_layer_only_when_ticked(tiny):
    shown = tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads")[tiny.ui.shown]
    assert tables(tiny, shown, False) == ""
    html = tables(tiny, shown, True)
    assert html.count("<table") == 3  # the view's, every layer's, the logit lens
    assert "Attention weights at layer 1" in html and "&#x27;The&#x27;" in html  # the tiny BPE's first token


def test_show_as_table_of_a_comparison_puts_a_beside_b(tiny):
    out = tiny.handlers.on_analyze(FOX, BUNDLED, 1, "Mean over heads", compare_on=True,
                                   prompt_b=FOX.replace("fox", "cat"))
    html = tables(tiny, out[tiny.ui.shown], True)
    assert html.count("<table") == 1 and "Weight in A" in html and "B only" in html
