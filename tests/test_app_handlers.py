"""The page's event handlers, called in process: a refused request fails no event.

A failed Gradio event marks every output component with an "Error" badge, hiding the last
good analysis and the controls a student needs next. So the handlers never raise: they skip
every output that would change, say why in a toast (gr.Warning; outside a running app it is
a Python warning, which these tests catch) and in the line under the prompt, and the model
status says how the model stands. tests/test_browser.py checks the same on the real page.
None of these needs a loaded model.
"""

from __future__ import annotations

import pytest

from attn import BUNDLED, Engine, PromptError, UnknownModelError
from helpers import THIRSTY

# Importing app.py builds the Gradio page (about 10 s with gradio's own import): these tests
# carry the `app` marker, and the import waits for the first of them, so that collecting the
# fast subset (-m "not browser and not app and not slow") does not pay for it.
pytestmark = pytest.mark.app
app = None  # the app module, once _import_app has run


@pytest.fixture(scope="module", autouse=True)
def _import_app():
    global app
    import app as module

    app = module

SKIP = {"__type__": "update"}  # what gr.skip() returns
SHOWN = {"model": BUNDLED, "prompt": THIRSTY}  # the last good analysis


def outputs(result: tuple) -> dict:
    names = ["key", "summary", "topk", "layer", "head", "status", "note", "step"]
    assert len(result) == len(names)
    return dict(zip(names, result))


def refused(prompt: str, model: str, message: str) -> dict:
    with pytest.warns(UserWarning) as toasts:
        out = outputs(app.on_analyze(prompt, model, 12, "Mean over heads", SHOWN))
    assert [str(t.message) for t in toasts] == [message]  # one toast, the message
    for name in ("key", "summary", "topk", "layer", "head", "step"):
        assert out[name] == SKIP, name  # the last good analysis and the controls stay
    assert message in out["note"] and "The views below still show the last analysis." in out["note"]
    return out


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_a_blank_prompt_is_refused_at_once_without_loading_a_model(prompt):
    refused(prompt, BUNDLED, "The prompt is empty: type some text to analyse.")
    assert app.ENGINE.status(BUNDLED)[0] == "not loaded"


def test_an_unknown_model_is_refused_with_a_markup_free_message():
    with pytest.raises(UnknownModelError) as info:
        app.ENGINE.analyze("Hello", "<b>gpt-5</b>")
    out = refused("Hello", "<b>gpt-5</b>", app.escape(str(info.value)))
    assert "<" not in out["status"] and "Error" not in out["status"]


def test_an_unavailable_model_is_refused_and_the_status_says_why(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.warns(UserWarning) as toasts:
        out = outputs(app.on_analyze("Hello", "gemma-3-1b", 12, "Mean over heads", SHOWN))
    assert "gated: set the HF_TOKEN secret" in str(toasts[0].message)
    assert out["key"] == out["summary"] == out["layer"] == out["head"] == SKIP
    assert "unavailable" in out["status"] and "gated" in out["note"]


def test_a_refusal_shows_markup_in_its_message_as_text(monkeypatch):
    def too_long(*_args, **_kwargs):
        raise PromptError("The prompt is 9 tokens long (with <BOS>); the limit is 8 tokens.")

    monkeypatch.setattr(app, "analyze", too_long)
    escaped = "The prompt is 9 tokens long (with &lt;BOS&gt;); the limit is 8 tokens."
    out = refused("a b c d e f g h", BUNDLED, escaped)
    assert "<BOS>" not in out["note"]


def test_a_view_whose_analysis_left_the_cache_keeps_the_page_and_says_so():
    gone = {"model": BUNDLED, "prompt": "never analysed in this process"}
    *views, note = app.on_view(gone, 0, 3, "Mean over heads", "gray", False, "raw", False)
    assert views == [SKIP] * 8
    assert "left the shared cache; press Analyze to run it again" in note


def test_a_successful_view_leaves_the_note_alone(monkeypatch, gpt2):
    engine = Engine(loader=lambda name, progress: gpt2, model_names=[BUNDLED])
    monkeypatch.setattr(app, "ENGINE", engine)
    prompt = "The quick brown fox jumps over the"
    engine.analyze(prompt, BUNDLED)
    *views, summary, topk, note = app.on_view({"model": BUNDLED, "prompt": prompt}, 0, 1, "Mean over heads", "gray",
                                              False, "raw", False)
    assert note == summary == topk == SKIP  # the note may be explaining a refused analysis meanwhile
    assert all(isinstance(v, str) and v for v in views)


def test_a_measure_the_model_lacks_is_refused_in_the_note_and_the_views_stay(monkeypatch, gpt2):
    engine = Engine(loader=lambda name, progress: gpt2, model_names=[BUNDLED])
    monkeypatch.setattr(app, "ENGINE", engine)
    prompt = "The quick brown fox jumps over the"
    engine.analyze(prompt, BUNDLED)
    *views, note = app.on_view({"model": BUNDLED, "prompt": prompt}, 0, 1, "Mean over heads", "gray", False, "value",
                               False)
    assert views == [SKIP] * 8  # GPT-2's fused qkv projection has no v_proj to weigh values by
    assert "Value-weighted attention is not available" in note


def test_checking_by_removing_tokens_before_any_analysis_is_refused_with_a_toast():
    with pytest.warns(UserWarning) as toasts:
        out = app.on_ablate(None)
    assert out == SKIP and [str(t.message) for t in toasts] == ["Analyze one prompt first (without Compare or Continue)."]
