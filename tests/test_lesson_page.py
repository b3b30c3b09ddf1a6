"""Lesson mode on the page (attn/web/lesson_page.py), its handlers called in process:
?lesson=NAME&step=N sets up the step's view through the deep-link machinery and shows the
panel (step counter, question); Back and Next move; "What the numbers say" is recomputed
after every view; a broken or hostile lesson leaves the page working. Also the profile grid's
pick. tests/test_lesson_browser.py opens every step in chromium."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from attn import BUNDLED
from attn.settings import Settings
from attn.views.view_cache import ViewCache
from attn.web import page as page_module
from attn.web.lesson import LESSONS_DIR
from helpers import ARTIST, EXAMPLES, HUNGRY, THIRSTY, engine_with

pytestmark = pytest.mark.app  # builds a page: imports gradio
SKIP = {"__type__": "update"}


def build(gpt2, lessons_dir=LESSONS_DIR):
    engine = engine_with(gpt2)
    return page_module.build(Settings(models=(BUNDLED,), prefetch=False), engine, ViewCache(8 << 20, prefetch=False),
                             EXAMPLES, lessons_dir=lessons_dir)


@pytest.fixture(scope="module")
def tiny(gpt2):
    return build(gpt2)


def request(**query):
    return SimpleNamespace(query_params=query)


def opened(page, **query) -> dict:
    return page.lessons.on_load(request(**query))


def visible(update) -> bool:
    return isinstance(update, dict) and update.get("visible") is True


def analyse_and_read(page, out: dict):
    """What the page runs after a step opens: the analysis, then the views and the reading."""
    ui, lui = page.ui, page.lesson_ui
    args = [out.get(c, d) for c, d in ((ui.prompt, ""), (ui.model, BUNDLED), (ui.layer, 0), (ui.head, "mean"))]
    args = [a["value"] if isinstance(a, dict) else a for a in args]
    compare = out[ui.compare_on]
    prompt_b = out[ui.prompt_b]["value"]
    shown = page.handlers.on_analyze(*args, None, compare, prompt_b, 1, 0.0, 0, 0)[ui.shown]
    inputs = (shown, 0, 1, "Mean over heads", "gray", False, "raw", False)
    views = page.handlers.on_view(*inputs, out.get(ui.profile, "bos"))
    return shown, views, page.lessons.on_reading(out[lui.place], *inputs)


def test_a_step_link_sets_up_its_view_and_shows_the_panel(tiny):
    ui, lui = tiny.ui, tiny.lesson_ui
    out = opened(tiny, lesson="lab", step="4")
    assert out[ui.prompt] == ARTIST and out[ui.autorun] is True
    assert visible(out[lui.panel])
    assert "Step 4 of 7" in out[lui.header] and "Are they all from the same sentence?" in out[lui.header]
    assert out[lui.place].index == 3


def test_each_step_sets_what_it_needs(tiny):
    ui = tiny.ui
    two, five = opened(tiny, lesson="lab", step="2"), opened(tiny, lesson="lab", step="5")
    assert two[ui.prompt] == HUNGRY and two[ui.compare_on] is True and two[ui.prompt_b]["value"] == THIRSTY
    assert five[ui.compare_on] is True and five[ui.profile] == "bos"
    assert opened(tiny, lesson="lab", step="1")[ui.profile] == "entropy"
    assert opened(tiny, lesson="lab", step="3")[ui.compare_on] is False  # the step before compared


def test_the_reading_follows_the_analysis_on_screen(tiny):
    out = opened(tiny, lesson="lab", step="1")
    _, _, read = analyse_and_read(tiny, out)
    first = read[tiny.lesson_ui.reading]
    assert "What the numbers say" in first and "predicts" in first
    out[tiny.ui.prompt] = "A completely different prompt about the sea and the"
    _, _, again = analyse_and_read(tiny, out)
    assert again[tiny.lesson_ui.reading] != first


def test_the_link_to_copy_is_the_steps_own(tiny):
    out = opened(tiny, lesson="lab", step="4")
    _, _, read = analyse_and_read(tiny, out)
    assert read[tiny.ui.link_query].startswith("?lesson=lab&step=4&prompt=The+artist")


def test_a_copied_link_opens_its_own_view_inside_the_step(tiny):
    out = opened(tiny, lesson="lab", step="7", prompt="My own prompt. Two sentences", layer="1")
    assert out[tiny.ui.prompt] == "My own prompt. Two sentences" and out[tiny.ui.layer]["value"] == 1
    assert "Step 7 of 7" in out[tiny.lesson_ui.header]


def test_next_and_back_move_one_step_and_stop_at_the_ends(tiny):
    lui = tiny.lesson_ui
    first = opened(tiny, lesson="lab", step="1")
    assert first[lui.back]["interactive"] is False and first[lui.next]["interactive"] is True
    second = tiny.lessons.move(1)(first[lui.place], BUNDLED, HUNGRY)
    assert second[lui.place].index == 1 and "Step 2 of 7" in second[lui.header]
    assert tiny.lessons.move(-1)(second[lui.place], BUNDLED, HUNGRY)[lui.place].index == 0
    last = opened(tiny, lesson="lab", step="7")
    assert last[lui.next]["interactive"] is False
    assert tiny.lessons.move(1)(last[lui.place], BUNDLED, HUNGRY)[lui.place].index == 6


def test_a_step_out_of_range_opens_the_nearest_with_a_note(tiny):
    with pytest.warns(UserWarning, match="steps 1-7; showing step 7"):
        out = opened(tiny, lesson="lab", step="99")
    assert out[tiny.lesson_ui.place].index == 6
    assert opened(tiny, lesson="lab", step="x")[tiny.lesson_ui.place].index == 0


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "lab\x00", "nope"])
def test_a_bad_lesson_name_shows_why_and_the_page_keeps_working(tiny, name):
    ui, lui = tiny.ui, tiny.lesson_ui
    with pytest.warns(UserWarning):
        out = opened(tiny, lesson=name, prompt=HUNGRY)
    assert visible(out[lui.panel]) and "cannot be opened" in out[lui.header] and out[lui.place] is None
    assert out[lui.next]["visible"] is False
    # The rest of the link still opens: drawn at once when its answer is known (the page's cache
    # or the analysis store), else analysed next.
    assert out[ui.prompt] == HUNGRY and (out[ui.autorun] is True or out[ui.shown].subject.prompt == HUNGRY)
    assert ui.shown in tiny.handlers.on_analyze(HUNGRY, BUNDLED, 1, "Mean over heads")


def test_a_malformed_lesson_names_the_file_and_field(gpt2, tmp_path):
    (tmp_path / "course.json").write_text(json.dumps(
        {"title": "T", "steps": [{"title": "S", "question": "Q?", "setup": {"measure": "gradient"},
                                  "reading": "depth"}]}), encoding="utf-8")
    page = build(gpt2, tmp_path)
    with pytest.warns(UserWarning, match="lessons/course.json: steps\\[0\\].setup.measure"):
        out = page.lessons.on_load(request(lesson="course"))
    assert "steps[0].setup.measure" in out[page.lesson_ui.header]


def test_no_lesson_no_panel_and_no_reading(tiny):
    out = opened(tiny, prompt=HUNGRY)
    assert tiny.lesson_ui.panel not in out and out[tiny.ui.prompt] == HUNGRY
    shown = tiny.handlers.on_analyze(HUNGRY, BUNDLED, 1, "Mean over heads")[tiny.ui.shown]
    assert tiny.lessons.on_reading(None, shown, 0, 1, "Mean over heads", "gray", False, "raw", False) == SKIP


def test_the_views_carry_the_grid_and_the_sentence_strip(tiny):
    shown = tiny.handlers.on_analyze(ARTIST, BUNDLED, 1, "Mean over heads")[tiny.ui.shown]
    out = tiny.handlers.on_view(shown, 0, 1, "Head 2", "gray", False, "raw", False, "previous")
    assert "previous token" in out[tiny.ui.profile_grid] and out[tiny.ui.profile_grid].count("<button") == 12
    assert "Per sentence" in out[tiny.ui.sentence_strip]


def test_a_grid_cell_picks_its_layer_and_head(tiny):
    shown = tiny.handlers.on_analyze(HUNGRY, BUNDLED, 1, "Mean over heads")[tiny.ui.shown]
    picked = tiny.handlers.on_pick(shown, SimpleNamespace(_data={"layer": 2, "head": 3}))
    assert picked == {tiny.ui.layer: 2, tiny.ui.head: "Head 3"}
    for crafted in ({"layer": 99, "head": 0}, {"layer": "x"}, None, ["layer"]):
        assert tiny.handlers.on_pick(shown, SimpleNamespace(_data=crafted)) == SKIP


def test_a_lessons_text_is_shown_as_text(gpt2, tmp_path):
    (tmp_path / "x.json").write_text(json.dumps(
        {"title": "<b>T</b>", "steps": [{"title": "<script>alert(1)</script>", "question": "<img src=x onerror=y>?",
                                        "reading": "depth"}]}), encoding="utf-8")
    page = build(gpt2, tmp_path)
    header = page.lessons.on_load(request(lesson="x"))[page.lesson_ui.header]
    assert "<script" not in header and "<img" not in header and "<b>T</b>" not in header
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in header and "&lt;img src=x onerror=y&gt;?" in header
    assert "&lt;b&gt;T&lt;/b&gt;" in header


def test_a_step_that_removes_tokens_asks_for_it_then_reads_it(tiny):
    lui = tiny.lesson_ui
    out = opened(tiny, lesson="lab", step="3")
    shown, _, read = analyse_and_read(tiny, out)
    assert read[lui.ablate_for] == f"{BUNDLED}\n{HUNGRY}" and "Removing each token in turn" in read[lui.reading]
    tiny.lessons.on_ablate(out[lui.place], shown)  # what the change of ablate_for runs
    again = tiny.lessons.on_reading(out[lui.place], shown, 0, 1, "Mean over heads", "gray", False, "raw", False)
    assert lui.ablate_for not in again and "Spearman" in again[lui.reading]


def test_other_steps_never_remove_tokens(tiny):
    out = opened(tiny, lesson="lab", step="4")
    _, _, read = analyse_and_read(tiny, out)
    assert tiny.lesson_ui.ablate_for not in read
    assert tiny.lessons.on_ablate(out[tiny.lesson_ui.place], None) == SKIP
