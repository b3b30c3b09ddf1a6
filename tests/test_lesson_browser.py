"""The lab as a lesson in a real browser (chromium on app.py): every step opens from its link
with a figure and its computed paragraph, also embedded in another site's iframe with
&embed=1; Next and Back; the profile grid picks a layer and head by mouse and by keyboard.
"""

from __future__ import annotations

import json
import re

import pytest

import helpers

pytestmark = [pytest.mark.browser, pytest.mark.app]
T = 90_000  # ms: a step's analysis (and step 3's ablation) on a busy 2-core machine

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the `browser` fixture reports it
    expect = None

LAB = json.loads((helpers.ROOT / "lessons" / "lab.json").read_text(encoding="utf-8"))
STEPS = len(LAB["steps"])


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(T)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


def read(root) -> str:
    """The step's computed paragraph, once it is there."""
    reading = root.locator("#lesson-reading .attn-reading")
    expect(reading).to_contain_text("What the numbers say", timeout=T)
    return reading.inner_text()


def check_step(root, number: int) -> str:
    step = LAB["steps"][number - 1]
    if step["setup"].get("ablate"):  # the step removes each token itself, then reads the result
        expect(root.locator("#lesson-reading")).to_contain_text("Spearman", timeout=T)
    expect(root.locator("#lesson-step")).to_contain_text(f"Step {number} of {STEPS}", timeout=T)
    expect(root.locator("#lesson-step")).to_contain_text(step["question"][:40])
    expect(root.locator("#figure img")).to_have_count(1, timeout=T)
    text = read(root)
    assert "gemma-3-270m" in text  # the model on screen, not the lab's
    return text


@pytest.mark.parametrize("number", range(1, STEPS + 1))
def test_every_step_opens_from_its_link_with_a_figure_and_its_computed_paragraph(page, app, number):
    page.goto(f"{app.url}?lesson=lab&step={number}")
    text = check_step(page, number)
    predicted = page.locator("#continuation mark").first.text_content() if number in (1, 7) else ""
    layer = page.locator("#layer input[type=number]").input_value()
    expected = {
        1: [f"predicts '{predicted}'", "most focused at layer"],
        2: ["What changed: ' hungry' became ' thirsty'", "B gives A's"],
        3: ["Spearman", "Deleting"],
        4: [f"At layer {layer}, ", "earlier sentences"],
        5: ["most alike regardless of the text", "most alike first"],
        6: ["stay nearby", "not an explanation", f"At layer {layer}, weighting"],
        7: [f"predicts '{predicted}'", "earlier sentence"],
    }[number]
    for part in expected:
        assert part in text, (part, text)
    if number == 3:  # the step removed each token itself
        expect(page.locator("#ablation .attn-agreement")).to_be_visible(timeout=T)
    assert page.errors == []


def test_next_and_back_walk_the_steps_and_the_paragraph_follows(page, app):
    page.goto(f"{app.url}?lesson=lab&step=4")
    four = check_step(page, 4)
    expect(page.locator("#lesson-back")).to_be_enabled()
    page.locator("#lesson-next").click()
    five = check_step(page, 5)
    assert five != four
    page.locator("#lesson-back").click()
    check_step(page, 4)

    def copied() -> bool:  # the views' last events may still be settling the link when the button is pressed
        page.locator("#copy-link").click()
        return bool(re.search(r"\?lesson=lab&step=4&prompt=", page.locator("#link textarea").input_value()))

    helpers.wait_until(copied, "the step's own link", timeout_s=T / 1000, poll=0.5)


def test_typing_another_prompt_changes_the_paragraph(page, app):
    page.goto(f"{app.url}?lesson=lab&step=7")
    before = check_step(page, 7)
    page.locator("#prompt textarea").fill("The cat chased the mouse. Then the dog chased the")
    page.locator("#analyze").click()
    helpers.wait_until(lambda: "' cat'" in read(page) or "' mouse'" in read(page) or "' dog'" in read(page),
                       "a paragraph about the new prompt", timeout_s=T / 1000)
    assert read(page) != before


def test_a_grid_cell_picks_its_layer_and_head_by_mouse_and_keyboard(page, app):
    page.goto(f"{app.url}?lesson=lab&step=6")
    check_step(page, 6)
    page.locator('#profile-grid button[data-layer="3"][data-head="2"]').click()
    expect(page.locator("#layer input[type=number]")).to_have_value("3", timeout=T)
    expect(page.locator("#head input")).to_have_value("Head 2", timeout=T)
    expect(page.locator("#lesson-reading")).to_contain_text("At layer 3, weighting", timeout=T)
    cell = page.locator('#profile-grid button[data-layer="5"][data-head="1"]')
    cell.focus()
    expect(page.locator("#profile-grid .attn-pread")).to_have_text(cell.get_attribute("aria-label"))
    assert "layer 5, head 1: " in cell.get_attribute("aria-label")
    page.keyboard.press("Enter")
    expect(page.locator("#layer input[type=number]")).to_have_value("5", timeout=T)
    expect(page.locator("#head input")).to_have_value("Head 1", timeout=T)


def test_a_hostile_lesson_name_is_refused_and_the_page_works(page, app):
    page.goto(f"{app.url}?lesson=..%2Fx&prompt=Jide+was+thirsty+so+she+went+looking+for")
    expect(page.locator("#lesson-step")).to_contain_text("cannot be opened", timeout=T)
    expect(page.locator("#figure img")).to_have_count(1, timeout=T)
    expect(page.locator("#lesson-next")).to_be_hidden()


@pytest.fixture
def embedding_site(app):
    """Another origin's page that embeds step 3 of the lesson, as a course page would."""
    with helpers.another_site(
            "<title>Course page</title><h1>Week 4: attention</h1>"
            f'<iframe id="step" title="Lesson step 3" src="{app.url}?lesson=lab&step=3&embed=1" width="1300" '
            'height="2400"></iframe>') as url:
        yield url


def test_an_embedded_step_works_inside_a_course_page(page, embedding_site):
    page.goto(embedding_site)
    frame = page.frame_locator("#step")
    check_step(frame, 3)
    frame.locator("#lesson-next").click()
    check_step(frame, 4)
    assert page.errors == []


# ---- axe-core (WCAG 2.0-2.2 A/AA, tests/test_a11y.py's rules) on the lesson's pages -------------------

from test_a11y import assert_accessible, axe_source  # noqa: E402,F401  (the fixture, shared)


@pytest.mark.parametrize(("query", "number"), [("step=4", 4), ("step=5", 5), ("step=3&embed=1", 3)])
def test_axe_finds_no_serious_violation_in_a_lesson_step(page, app, axe_source, query, number):  # noqa: F811
    page.goto(f"{app.url}?lesson=lab&{query}")
    check_step(page, number)
    page.locator('#profile-grid button[tabindex="0"]').first.focus()  # a cell's reading shown too
    assert_accessible(page, axe_source)


def test_axe_finds_no_serious_violation_in_a_lesson_in_a_dark_theme(browser, app, axe_source):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    context.set_default_timeout(T)
    try:
        page = context.new_page()
        page.goto(f"{app.url}?lesson=lab&step=4")
        check_step(page, 4)
        assert page.evaluate("document.body.classList.contains('dark')")
        assert_accessible(page, axe_source)
    finally:
        context.close()


def test_the_profile_grid_is_one_tab_stop_and_the_arrows_move_in_it(page, app):
    page.goto(f"{app.url}?lesson=lab&step=6")
    check_step(page, 6)
    stops = page.locator('#profile-grid button[tabindex="0"]')
    expect(stops).to_have_count(1)
    stops.focus()
    start = (stops.get_attribute("data-layer"), stops.get_attribute("data-head"))
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("[document.activeElement.dataset.layer, document.activeElement.dataset.head]")
    assert focused == [str(int(start[0]) + 1), str(int(start[1]) + 1)]
    expect(page.locator('#profile-grid button[tabindex="0"]')).to_have_count(1)
    page.keyboard.press("Tab")  # out of the grid in one press
    assert page.evaluate("!document.activeElement.closest('#profile-grid')")
