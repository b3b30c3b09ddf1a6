"""The real page in a real browser (Playwright driving Debian's chromium) against app.py
run as a subprocess: presets, layer slider, deep links, copy link, iframe embedding,
script-injection prompts, mistakes that leave the page usable, and a page opened while
the model is still loading.

Without /usr/bin/chromium (or the playwright package) the module is skipped, unless
ATTN_REQUIRE_BROWSER=1, which turns that into a failure. Full-page screenshots are
written to /tmp/shots/ (browser.png, after-mistakes.png, while-loading.png; ATTN_SHOTS_DIR
overrides the folder).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

import app_server
import helpers

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.browser, pytest.mark.app]  # chromium on the app.py subprocess

SHOTS = Path(os.environ.get("ATTN_SHOTS_DIR", "/tmp/shots"))
T = 60_000  # ms: the first analysis may wait for the model load

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - the `browser` fixture reports it (skip, or fail in CI)
    Page = expect = None

EXAMPLES = json.loads((HERE.parent / "examples.json").read_text(encoding="utf-8"))
MODEL = app_server.BUNDLED
PRESET = {p["name"]: f"#preset-{i}" for i, p in enumerate(EXAMPLES)}  # button ids by name
PROMPT = {p["name"]: p["prompt"] for p in EXAMPLES}
HUNGRY, THIRSTY, ARTIST = PROMPT["Hungry"], PROMPT["Thirsty"], PROMPT["Artist passage"]
XSS = "<img src=x onerror=alert(1)>"
XSS_ATTR = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


# ---- fixtures --------------------------------------------------------------------------


class Recorder:
    """What a page did that no test wants: dialogs (alert/confirm) and uncaught errors."""

    def __init__(self, page: Page):
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def context(browser, app):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(T)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.recorder = Recorder(page)
    return page


# ---- helpers ---------------------------------------------------------------------------


def open_app(page: Page, app, query: dict | None = None) -> None:
    page.goto(app.url + ("?" + urlencode(query) if query else ""))
    expect(page.locator("#analyze")).to_be_visible(timeout=T)
    # The load event fills the prompt (the link's, or the first preset's): wait for it so
    # it cannot overwrite what a test types or clicks next.
    expect(page.locator("#prompt textarea")).not_to_have_value("", timeout=T)


def figure_img(root):
    return root.locator("#figure img")


# Polls with short failure messages (unlike expect() on a data: URL of tens of kB).
wait_until = functools.partial(helpers.wait_until, timeout_s=T / 1000, poll=0.1)


FINGERPRINT_JS = """e => {
  const s = e.tagName === 'IMG' ? e.src : e.innerHTML;
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return s.slice(0, Math.min(s.length, 24)) + '|' + s.length + '|' + h;
}"""


def fingerprint(locator) -> str:
    """A short digest of an <img>'s src (or an element's HTML), to tell views apart."""
    return locator.evaluate(FINGERPRINT_JS)


def figure_id(root) -> str:
    return fingerprint(figure_img(root))


def overview_id(root) -> str:
    return fingerprint(root.locator("#overview"))


def wait_rendered(root) -> None:
    """The figure (a data: image, PNG or SVG), the highlighted tokens and the overview."""
    expect(figure_img(root)).to_be_visible(timeout=T)
    wait_until(lambda: figure_id(root).startswith("data:image/"), "the figure's data: image")
    expect(root.locator("#tokens .attn-tok").first).to_be_attached(timeout=T)
    # The overview heatmap: HTML cells, or an image for long prompts.
    expect(root.locator("#overview").locator(".attn-heatmap, img").first).to_be_visible(timeout=T)


def pick_preset(root, app, name: str) -> None:
    """Click a preset and wait until its own analysis is in place: the page already shows one
    (the first preset is drawn before any click, from the analysis store), so the figure
    alone does not say the click's events are done. Done: the server looked the analysis up
    (cache counters), its result reached the page (no progress over the prediction), and the
    tokens are the preset's."""
    def asked() -> int:
        cache = app.stats()["cache"]
        return cache["hits"] + cache["misses"]

    before = asked()
    root.locator(PRESET[name]).click()
    wait_until(lambda: asked() > before, f"the {name} preset's analysis")
    wait_until(lambda: not progress_shown(root, "#continuation"), "its result on the page")
    wait_until(lambda: shown_prompt(root) == PROMPT[name], f"the {name} preset's tokens")
    wait_rendered(root)


def shown_prompt(root) -> str:
    """The prompt the highlighted tokens show (<BOS> left out)."""
    return "".join(root.locator("#tokens .attn-tok").evaluate_all("els => els.map(e => e.textContent)")[1:])


def change_of(what: str, read, before: str) -> str:
    return wait_until(lambda: (lambda now: now if now != before else None)(read()), f"{what} to change")


def token_weights(root) -> list[float]:
    return [float(w) for w in root.locator("#tokens .attn-tok").evaluate_all(
        "els => els.map(e => e.dataset.weight)")]


def layer_info(page: Page) -> str:
    """The layer line (not the timer Gradio shows over it while an event runs)."""
    return page.locator("#layer-info [data-testid=markdown]").inner_text().strip()


def set_number(page: Page, elem_id: str, value: int) -> None:
    """Type a value into a number control (a slider's box or a number field), as a person does."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def set_layer(page: Page, layer: int) -> None:
    set_number(page, "layer", layer)
    expect(page.locator("#layer-info")).to_contain_text(f"Layer {layer} of ", timeout=T)


def pick_head(page: Page, label: str) -> None:
    page.locator("#head input").click()
    page.get_by_role("option", name=label, exact=True).click()
    expect(page.locator("#head input")).to_have_value(label)


def api_weights(app, prompt, layer, head, bos) -> list[float]:
    """The weights /view reports for one view (a cache hit once the page analysed the prompt)."""
    from gradio_client import Client

    return Client(app.url, verbose=False).predict(prompt, MODEL, layer, head, bos, api_name="/view")["weights"]


ERROR_TEXTS_JS = """() => {
  const found = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (!/error/i.test(n.textContent) || el.closest('[data-testid="toast-body"]')) continue;
    if (el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) found.push(n.textContent.trim());
  }
  return found;
}"""


def error_texts(page: Page) -> list[str]:
    """Visible text saying "Error" anywhere but in a toast (Gradio's badge over a failed output)."""
    return page.evaluate(ERROR_TEXTS_JS)


def close_toasts(page: Page) -> None:
    for button in page.get_by_test_id("toast-close").all():
        button.click()
    expect(page.get_by_test_id("toast-body")).to_have_count(0)


def assert_controls_ready(root) -> None:
    """Layer slider and head dropdown: shown, enabled, under no progress overlay."""
    for control in ("#layer input[type=range]", "#head input"):
        expect(root.locator(control)).to_be_visible(timeout=5_000)
        expect(root.locator(control)).to_be_enabled(timeout=5_000)
        # Playwright's actionability checks: nothing on top of it would take the click.
        root.locator(control).click(trial=True, timeout=5_000)
    for box in ("#layer", "#head"):
        wait_until(lambda: not progress_shown(root, box), f"no progress over {box}", timeout_s=5)


def progress_shown(root, box: str) -> bool:
    """Whether Gradio's progress/status overlay of a component is showing (it fades to
    opacity 0 when idle, which Playwright still counts as visible)."""
    return root.locator(f"{box} [data-testid=status-tracker]").evaluate(
        "e => e.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})")


def assert_injection_inert(page: Page, text: str) -> None:
    """The typed markup is visible as text and nothing from it became an element."""
    page.wait_for_timeout(500)  # let a would-be onerror/onload fire
    assert page.locator("#tokens img").count() == 0
    assert page.locator("#continuation img").count() == 0
    assert page.locator("#topk img").count() == 0
    assert page.locator("#tokens script, #continuation script").count() == 0
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror], [onload]').length") == 0
    assert text in page.locator("#tokens .attn-tokens").inner_text()
    assert text in page.locator("#continuation").inner_text()
    assert page.recorder.dialogs == []


# ---- tests -----------------------------------------------------------------------------


def test_preset_shows_figure_tokens_continuation_and_topk(page, app):
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    expect(page.locator("#prompt textarea")).to_have_value(THIRSTY)
    expect(page.locator("#continuation")).to_contain_text(THIRSTY + " water")
    expect(page.locator("#topk")).to_contain_text("' water'")
    expect(page.locator("#look-for")).to_contain_text("What to look for")
    info = layer_info(page)
    assert info.startswith("Layer 12 of 17: local"), info
    assert "mean over heads" in info

    # The highlighted tokens: <BOS> + the prompt's 9 tokens, weights as the API reports them.
    toks = page.locator("#tokens .attn-tok")
    expect(toks).to_have_count(10)
    assert toks.first.inner_text().startswith("<BOS>")
    assert "".join(toks.nth(i).inner_text() for i in range(1, 10)) == THIRSTY
    weights = token_weights(page)
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    for i in range(1, 10):
        title = toks.nth(i).get_attribute("title")
        assert f"weight {weights[i]:.4f}" in title, title
    api = api_weights(app, THIRSTY, 12, "mean", "gray")
    assert weights == pytest.approx(api, abs=2e-6)
    expect(page.locator("#tokens .attn-pred")).to_have_text(" water")

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "browser.png"), full_page=True)
    assert page.recorder.errors == [] and page.recorder.dialogs == []


def test_moving_the_layer_slider_redraws_without_running_the_model(page, app):
    open_app(page, app)
    pick_preset(page, app, "Hungry")
    assert layer_info(page).startswith("Layer 12 of 17")
    calls = app.stats()["forward_calls"]
    fig = figure_id(page)
    weights = token_weights(page)

    set_layer(page, 3)  # the number box inside the slider
    fig3 = change_of("the figure", lambda: figure_id(page), fig)
    assert layer_info(page).startswith("Layer 3 of 17: local")
    assert token_weights(page) != weights

    rng = page.locator("#layer input[type=range]")  # the keyboard on the range input
    rng.focus()
    rng.press("ArrowRight")
    rng.press("ArrowRight")
    expect(page.locator("#layer-info")).to_contain_text("Layer 5 of 17", timeout=T)
    assert "global" in layer_info(page)
    change_of("the figure", lambda: figure_id(page), fig3)
    expect(page.locator("#layer input[type=number]")).to_have_value("5")

    overview = overview_id(page)
    pick_head(page, "Head 2")
    expect(page.locator("#layer-info")).to_contain_text("head 2", timeout=T)
    change_of("the overview", lambda: overview_id(page), overview)

    page.get_by_label("exclude: BOS removed, other weights renormalised to sum to 1").check()
    expect(page.locator("#tokens .attn-bos")).to_have_attribute("data-weight", "0.000000", timeout=T)
    assert sum(token_weights(page)) == pytest.approx(1.0, abs=1e-4)

    set_layer(page, 3)  # back to a layer already drawn
    assert app.stats()["forward_calls"] == calls
    assert page.recorder.errors == []


def test_deep_link_opens_exactly_that_view(page, app):
    prompt = "The cat sat on the mat because it was"
    before = app.stats()["forward_calls"]
    open_app(page, app, {"prompt": prompt, "model": MODEL, "layer": 3, "head": 1})
    wait_rendered(page)  # without clicking anything
    expect(page.locator("#prompt textarea")).to_have_value(prompt)
    info = layer_info(page)
    assert re.match(r"^Layer 3 of 17: local .* · head 1 · ", info), info
    expect(page.locator("#head input")).to_have_value("Head 1")
    expect(page.locator("#layer input[type=number]")).to_have_value("3")
    expect(page.locator("#continuation")).to_contain_text(prompt)
    assert token_weights(page) == pytest.approx(api_weights(app, prompt, 3, "1", "gray"), abs=2e-6)
    assert app.stats()["forward_calls"] == before + 1  # one pass for the new prompt, not more


def test_copy_link_reproduces_the_view(page, context, app):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.url.rstrip("/"))
    open_app(page, app)
    pick_preset(page, app, "Hungry")
    set_layer(page, 7)
    pick_head(page, "Head 1")
    expect(page.locator("#layer-info")).to_contain_text("head 1", timeout=T)
    page.get_by_label("hide: BOS not drawn (weights unchanged)").check()
    expect(page.locator("#tokens .attn-tok").first).to_have_attribute(
        "title", re.compile(r"\(not drawn\)"), timeout=T)

    page.click("#copy-link")
    box = page.locator("#link textarea")
    expect(box).to_have_value(re.compile(r"prompt="), timeout=T)
    url = box.input_value()
    assert url.startswith(app.url + "?")
    for part in ("prompt=", "layer=", "head="):
        assert part in url
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q == {"prompt": HUNGRY, "model": MODEL, "layer": "7", "head": "1", "bos": "hide"}
    assert page.evaluate("navigator.clipboard.readText()") == url

    info, fig, weights = layer_info(page), figure_id(page), token_weights(page)
    other = context.new_page()
    other.recorder = Recorder(other)
    other.goto(url)
    wait_rendered(other)
    expect(other.locator("#prompt textarea")).to_have_value(HUNGRY)
    expect(other.locator("#head input")).to_have_value("Head 1")
    expect(other.locator("#bos input[value=hide]")).to_be_checked()
    wait_until(lambda: layer_info(other) == info, "the link's view")  # not the first preset drawn before it
    assert figure_id(other) == fig  # the very same picture
    assert token_weights(other) == weights


def measure_is(page: Page, label: str, info_text: str) -> None:
    page.locator("#measure label", has_text=label).click()
    expect(page.locator("#layer-info")).to_contain_text(info_text, timeout=T)


def test_removing_tokens_checks_the_attention_and_measures_switch_without_the_model(page, app):
    """The student's path: " thirsty" gets the attention; one button shows whether removing
    it changes " water"; value-weighted attention shrinks the <BOS> sink; nothing re-runs."""
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    expect(page.locator("#ablation")).to_contain_text("Check by removing tokens")
    before = app.stats()
    weights = token_weights(page)
    tokens = page.locator("#tokens .attn-tok").all_inner_texts()
    assert tokens[max(range(1, len(weights)), key=weights.__getitem__)] == " thirsty"

    page.click("#ablate")
    wait_until(lambda: progress_shown(page, "#ablation") or None, "progress over the ablation")
    set_layer(page, 3)  # views stay usable while the model runs the deletions
    columns = page.locator("#ablation .attn-abl-col")
    expect(columns).to_have_count(9, timeout=T)  # every token but <BOS>
    wait_until(lambda: not progress_shown(page, "#ablation") or None, "the progress to end", timeout_s=10)
    from gradio_client import Client

    api = Client(app.url, verbose=False).predict(THIRSTY, MODEL, api_name="/ablate")  # cached by the click
    shown = columns.evaluate_all("els => els.map(e => [Number(e.dataset.pos), Number(e.dataset.delta)])")
    assert shown == [[r["index"], pytest.approx(r["delta"], abs=1e-6)] for r in api["ablation"]]
    thirsty = next(r for r in api["ablation"] if r["token"] == " thirsty")
    assert thirsty["p_next"] < api["p_next"] / 10  # removing it takes " water" away
    expect(page.locator("#ablation .attn-agreement")).to_contain_text("Spearman's ρ")
    expect(page.locator("#ablation .attn-agreement")).to_contain_text("attention weights at layer 3")

    bos_raw = float(page.locator("#tokens .attn-bos").get_attribute("data-weight"))
    measure_is(page, "Value-weighted", "value-weighted")
    wait_until(lambda: float(page.locator("#tokens .attn-bos").get_attribute("data-weight")) < bos_raw or None,
               "the <BOS> sink to shrink")
    expect(page.locator("#ablation .attn-agreement")).to_contain_text("value-weighted attention at layer 3")
    expect(page.locator("#overview .attn-measure-value")).to_be_visible()
    expect(page.locator("#overview .attn-lens")).to_have_count(18)
    measure_is(page, "Rollout", "Attention rollout")
    expect(page.locator("#overview .attn-measure-rollout")).to_be_visible()

    after = app.stats()
    assert after["forward_calls"] == before["forward_calls"]  # the deletions are counted apart
    assert after["ablation_calls"] == before["ablation_calls"] + 1
    assert page.recorder.errors == []


def test_a_deep_link_carries_the_measure(page, app):
    open_app(page, app, {"prompt": THIRSTY, "model": MODEL, "layer": 5, "measure": "value"})
    wait_rendered(page)
    expect(page.locator("#measure input[value=value]")).to_be_checked()
    expect(page.locator("#layer-info")).to_contain_text("value-weighted")
    page.click("#copy-link")
    expect(page.locator("#link textarea")).to_have_value(re.compile(r"measure=value"), timeout=T)


@pytest.fixture
def host_page_url(app):
    """A page on another origin (its own http.server) that embeds the app in an iframe."""
    with helpers.another_site(
            "<title>Embedding page</title><h1>Embedded demo</h1>"
            f'<iframe id="app-frame" src="{app.url}" width="1300" height="2400" style="border:1px solid #999">'
            "</iframe>") as url:
        yield url


def test_app_renders_inside_an_iframe(page, app, host_page_url):
    page.goto(host_page_url)
    frame = page.frame_locator("#app-frame")
    expect(frame.locator("#analyze")).to_be_visible(timeout=T)
    expect(frame.locator("#prompt textarea")).not_to_have_value("", timeout=T)
    pick_preset(frame, app, "Artist passage")
    expect(frame.locator("#prompt textarea")).to_have_value(ARTIST)
    expect(frame.locator("#continuation")).to_contain_text("beauty of the")
    expect(frame.locator("#tokens .attn-tok")).to_have_count(len(token_weights(frame)))
    assert len(token_weights(frame)) > 30
    # The link points at the app, not at the page that embeds it.
    frame.locator("#copy-link").click()
    box = frame.locator("#link textarea")
    expect(box).to_have_value(re.compile(r"prompt="), timeout=T)
    assert box.input_value().startswith(app.url + "?")
    assert page.recorder.dialogs == []


def test_typed_script_injection_renders_as_text(page, app):
    open_app(page, app)
    page.locator("#prompt textarea").fill(XSS)
    page.click("#analyze")
    wait_rendered(page)
    expect(page.locator("#continuation")).to_contain_text(XSS, timeout=T)
    expect(page.locator("#tokens .attn-tokens")).to_contain_text(XSS, timeout=T)
    assert_injection_inert(page, XSS)


def test_deep_link_script_injection_renders_as_text(page, app):
    open_app(page, app, {"prompt": XSS_ATTR, "model": MODEL, "layer": 2, "head": "mean"})
    wait_rendered(page)
    expect(page.locator("#prompt textarea")).to_have_value(XSS_ATTR)
    expect(page.locator("#continuation")).to_contain_text(XSS_ATTR, timeout=T)
    assert layer_info(page).startswith("Layer 2 of 17")
    assert_injection_inert(page, XSS_ATTR)


def test_empty_prompt_shows_a_readable_error(page, app):
    open_app(page, app)
    wait_rendered(page)  # the first preset, drawn from the store
    fig = figure_id(page)
    page.locator("#prompt textarea").fill("   ")
    page.click("#analyze")
    expect(page.get_by_test_id("toast-body").first).to_contain_text(
        "The prompt is empty: type some text to analyse.", timeout=T)
    assert figure_id(page) == fig and shown_prompt(page) == HUNGRY  # nothing new drawn, nothing lost


def test_deep_link_with_bad_values_falls_back(page, app):
    open_app(page, app, {"prompt": "Deep links can be wrong", "model": "gpt-5", "layer": 40, "head": 9, "bos": "x"})
    wait_rendered(page)
    expect(page.locator("#model input")).to_have_value(re.compile("Gemma 3 270M"))
    info = layer_info(page)
    assert info.startswith("Layer 17 of 17") and "mean over heads" in info, info
    expect(page.locator("#bos input[value=gray]")).to_be_checked()


def test_deep_link_with_bad_values_says_so(page, app):
    open_app(page, app, {"prompt": "Deep links can be wrong", "model": "gpt-5", "layer": 40})
    wait_rendered(page)
    expect(page.get_by_test_id("toast-body").first).to_contain_text("Unknown model in the link", timeout=3_000)


# "word" x 5000 is 5000 tokens: 5,001 with <BOS>.
MISTAKES = {
    "empty": ("   ", "The prompt is empty: type some text to analyse."),
    "too long": (" ".join(["word"] * 5000), "The prompt is 5,001 tokens long (with <BOS>); the limit is 2,048 tokens."),
}


def test_a_mistake_keeps_the_last_analysis_and_the_controls_usable(page, app):
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    good_tokens = token_weights(page)

    for layer, (name, (prompt, message)) in zip((3, 5), MISTAKES.items()):
        page.locator("#prompt textarea").fill(prompt)
        page.click("#analyze")
        expect(page.get_by_test_id("toast-body").first).to_contain_text(message, timeout=T)
        expect(page.locator("#prompt-note")).to_contain_text(message)  # the line under the prompt
        assert error_texts(page) == [], f"{name}: {error_texts(page)}"
        # The last good analysis is still on screen, and the controls still drive it.
        expect(page.locator("#continuation")).to_contain_text(THIRSTY + " water")
        expect(page.locator("#topk")).to_contain_text("' water'")
        expect(page.locator("#model-status")).to_contain_text("ready")
        assert_controls_ready(page)
        fig = figure_id(page)
        set_layer(page, layer)
        change_of("the figure", lambda: figure_id(page), fig)
        assert len(token_weights(page)) == len(good_tokens)  # still the Thirsty prompt's tokens
        assert error_texts(page) == [], f"{name}: {error_texts(page)}"
        close_toasts(page)

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#prompt textarea").fill(MISTAKES["empty"][0])
    page.click("#analyze")
    expect(page.locator("#prompt-note")).to_contain_text(MISTAKES["empty"][1], timeout=T)
    page.screenshot(path=str(SHOTS / "after-mistakes.png"), full_page=True)

    fig = figure_id(page)
    page.click(PRESET["Artist passage"])
    expect(page.locator("#continuation")).to_contain_text("beauty of the", timeout=T)
    change_of("the figure", lambda: figure_id(page), fig)
    expect(page.locator("#prompt-note")).to_have_text("")
    assert len(token_weights(page)) > 30
    assert page.recorder.errors == [] and page.recorder.dialogs == []


@pytest.fixture
def loading_app():
    """A second app.py whose model is still loading: its cache is empty, and this test holds
    the cache's converter lock (as another process converting would), so the app waits to
    convert for as long as the test runs. Stopped mid-load."""
    import fcntl

    folder = Path(tempfile.mkdtemp(prefix="attn-loading-"))
    cache = folder / "cache"
    cache.mkdir()
    with open(cache / ".lock", "w") as converter:
        fcntl.flock(converter, fcntl.LOCK_EX)
        server = app_server.launch(folder, cache_dir=str(cache))
        try:
            server.wait_http()
            yield server
        finally:
            server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_fresh_page_is_usable_while_the_model_loads(browser, loading_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(loading_app.url)
        expect(page.locator("#model-status")).to_contain_text("loading", timeout=T)
        assert_controls_ready(page)
        expect(page.locator("#layer input[type=number]")).to_have_value("12")  # the first preset's layer
        wait_rendered(page)  # the first preset, drawn from the shipped records: no model needed
        assert shown_prompt(page) == HUNGRY
        pick_preset(page, loading_app, "Thirsty")  # another preset: from the store too, while the model loads
        # Asking for a new analysis shows its progress where the prediction will appear.
        page.locator("#prompt textarea").fill("A prompt the store has never seen")
        page.click("#analyze")
        wait_until(lambda: progress_shown(page, "#continuation"), "progress over the prediction")
        assert_controls_ready(page)
        assert error_texts(page) == []
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "while-loading.png"), full_page=True)
        assert loading_app.stats()["models"][MODEL] == "loading"  # all of the above came first
    finally:
        context.close()


def test_download_this_view_gives_the_four_files(page, app, tmp_path):
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    measure_is(page, "Value-weighted", "value-weighted")
    page.click("#export")
    links = page.locator("#export-files a[download]")
    expect(links).to_have_count(4, timeout=T)
    stem = "jide-was-thirsty-so-she__gemma-3-270m__layer12__mean__value"
    saved = {}
    for i in range(4):
        with page.expect_download() as info:
            links.nth(i).click()
        download = info.value
        saved[download.suggested_filename] = download.path().read_bytes()
    assert set(saved) == {f"{stem}.png", f"{stem}.svg", f"{stem}.csv", "jide-was-thirsty-so-she__gemma-3-270m.json"}
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(saved[f"{stem}.png"])).size[0] > 2000  # print resolution
    assert b"Value-weighted attention for Layer 12" in saved[f"{stem}.svg"]
    rows = [r for r in saved[f"{stem}.csv"].decode().splitlines() if r and not r.startswith("#")]
    weights = [float(r.rsplit(",", 1)[1]) for r in rows[1:]]
    from gradio_client import Client

    view = Client(app.url, verbose=False).predict(THIRSTY, MODEL, 12, "mean", "gray", "value", api_name="/view")
    assert weights == pytest.approx(view["weights"], abs=2e-6)
    assert json.loads(saved["jide-was-thirsty-so-she__gemma-3-270m.json"])["schema"] == "attn-analysis/3"


def test_a_compare_link_opens_both_diagrams_and_the_difference_strip(page, app):
    open_app(page, app, {"prompt": HUNGRY, "compare": THIRSTY, "model": MODEL, "layer": 12})
    wait_rendered(page)
    expect(page.locator("#compare-on input")).to_be_checked()
    expect(page.locator("#prompt-b textarea")).to_have_value(THIRSTY)
    expect(page.locator("#figure img")).to_have_attribute("alt", re.compile("prompt A over prompt B"))
    cells = page.locator("#figure .attn-diff-cell")
    expect(cells).to_have_count(11)  # 9 shared tokens + " hungry" + " thirsty"
    expect(page.locator("#continuation .attn-cross")).to_contain_text("' water'")
    expect(page.locator("#tokens .attn-pred")).to_have_count(2)  # A's and B's highlighted tokens
    from gradio_client import Client

    api = Client(app.url, verbose=False).predict(HUNGRY, THIRSTY, MODEL, api_name="/compare")
    thirsty_cell = cells.filter(has_text="thirsty")
    b_weight = sum(h[api["b"]["tokens"].index(" thirsty")] for h in api["b"]["attention"][12]) / 4
    assert float(thirsty_cell.get_attribute("data-delta")) == pytest.approx(b_weight, abs=1e-5)  # only in B
    page.click("#copy-link")
    expect(page.locator("#link textarea")).to_have_value(re.compile(r"compare=Jide"), timeout=T)
    assert page.recorder.errors == []


def test_generate_five_tokens_and_step_to_the_third_without_the_model(page, app):
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    page.click("#continue")  # the accordion
    set_number(page, "n-new", 5)
    page.click("#analyze")
    marks = page.locator("#continuation .attn-gen-token")
    expect(marks).to_have_count(5, timeout=T)
    expect(page.locator("#step")).to_be_visible()
    before = app.stats()
    from gradio_client import Client

    api = Client(app.url, verbose=False).predict(THIRSTY, MODEL, 5, api_name="/generate")  # cached by the click
    set_number(page, "step", 2)
    third = api["generated"][2]
    expect(page.locator("#tokens .attn-pred")).to_have_text(third, timeout=T)
    toks = page.locator("#tokens .attn-tok")
    expect(toks).to_have_count(10 + 2)  # <BOS> + 9 prompt tokens + the 2 generated before step 2
    weights = token_weights(page)
    mean = [sum(h[k] for h in api["steps"][2]["attention"][12]) / 4 for k in range(12)]
    assert weights == pytest.approx(mean, abs=2e-6)
    after = app.stats()
    assert (after["forward_calls"], after["generate_calls"]) == (before["forward_calls"], before["generate_calls"])
    page.click("#copy-link")
    expect(page.locator("#link textarea")).to_have_value(re.compile(r"continue=5.*step=2"), timeout=T)
    assert page.recorder.errors == []


def test_words_merge_pieces_and_sum_their_attention(page, app):
    open_app(page, app)
    pick_preset(page, app, "Thirsty")
    pieces = token_weights(page)
    texts = page.locator("#tokens .attn-tok").all_inner_texts()
    assert texts[1:3] == ["J", "ide"]
    calls = app.stats()["forward_calls"]
    page.locator("#words input").check()
    toks = page.locator("#tokens .attn-tok")
    expect(toks).to_have_count(9, timeout=T)  # "J" + "ide" is one word
    assert toks.nth(1).inner_text() == "Jide"
    merged = token_weights(page)
    assert merged[1] == pytest.approx(pieces[1] + pieces[2], abs=2e-6)
    assert merged[2:] == pytest.approx(pieces[3:], abs=2e-6)
    page.click("#copy-link")
    expect(page.locator("#link textarea")).to_have_value(re.compile(r"words=1"), timeout=T)
    page.locator("#words input").uncheck()
    expect(toks).to_have_count(10, timeout=T)  # the exact per-token numbers, one toggle away
    assert app.stats()["forward_calls"] == calls
    assert page.recorder.errors == []


# ---- the page after a restart (issue 21): drawn from the analysis store, no model ---------------


def test_the_page_comes_up_with_the_first_preset_drawn(page, app):
    before = app.stats()
    open_app(page, app)
    wait_rendered(page)
    assert shown_prompt(page) == HUNGRY
    expect(page.locator("#continuation")).to_contain_text(HUNGRY)
    expect(page.locator("#look-for")).to_contain_text("What to look for")
    assert layer_info(page).startswith("Layer 12 of 17")
    assert app.stats()["forward_calls"] == before["forward_calls"]
    assert page.recorder.errors == []


def test_the_first_sight_is_in_the_page_itself_not_in_a_later_event(browser, app):
    """With JavaScript's network cut after the page's own files (no queue, no events), the
    figure is there: a course page that embeds the demo never shows an empty frame."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("**/gradio_api/queue/**", lambda route: route.abort())  # no event can answer
        page.goto(app.url)
        wait_rendered(page)
        assert shown_prompt(page) == HUNGRY
    finally:
        context.close()


def test_a_deep_link_to_a_stored_view_opens_drawn_without_the_model(page, app):
    before = app.stats()
    open_app(page, app, {"prompt": ARTIST, "model": MODEL, "layer": 3, "head": 1, "bos": "exclude"})
    expect(page.locator("#layer-info")).to_contain_text("Layer 3 of 17", timeout=T)
    wait_rendered(page)
    assert shown_prompt(page) == ARTIST
    info = layer_info(page)
    assert "head 1" in info, info
    assert sum(token_weights(page)) == pytest.approx(1.0, abs=1e-4)  # exclude: renormalised without <BOS>
    fig = figure_id(page)
    after = app.stats()
    assert after["forward_calls"] == before["forward_calls"]  # from the store (or the cache it filled)
    assert figure_id(page) == fig and page.recorder.errors == []
