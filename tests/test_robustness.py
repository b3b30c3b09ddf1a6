"""Bad input, through the engine, the API and the page: every case gets a clear message or
a valid analysis, the server keeps serving, and nothing a user typed becomes markup.

Three layers, cheapest first:
- the engine and every renderer in-process (the real bundled Gemma 3 270M);
- the public API through gradio_client against the real app (tests/app_server.py);
- a few representative cases in a real browser (Playwright + Debian chromium; skipped
  without chromium unless ATTN_REQUIRE_BROWSER=1, as in tests/test_browser.py).

"Nothing rendered that a user typed" is checked structurally: each fragment is parsed
(html.parser / xml.etree), every element must be one the renderers emit on purpose, no
attribute may be an event handler, and rendering the same analysis with every user string
replaced by plain letters of the same length must give the very same element structure.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pytest

from attn import (
    BUNDLED,
    PromptError,
    TokenProb,
    View,
    ViewError,
)
from attn.views.diagram import line_diagram
from attn.views.drawing import to_svg
from attn.views.heatmap import CELL_LIMIT, heatmap_html
from attn.views.highlight import token_html
from attn.views.labels import visible
from attn.views.summary import continuation_html, top_k_html
from attn.views.view import check_view
from helpers import THIRSTY, audit_html, engine_with

MODEL = BUNDLED
EMPTY_MSG = "The prompt is empty: type some text to analyse."
LIMIT = 2048  # the app's default ATTN_MAX_TOKENS
OVER_LIMIT = " the" * 2100  # 2,100 tokens + BOS (" the" is one Gemma token)
OVER_CHARS = "a" * (LIMIT * 100 + 1)  # refused before tokenising
ROW_TOL = 1e-4

UNICODE = {
    "emoji": "👩‍🚀 launches 🚀🎉 (and 🏳️‍🌈 flies)",
    "cjk": "日本語のテキストと中文文本和한국어",
    "arabic-rtl": "مرحبا بالعالم، كيف حالك",
    "hebrew-rtl": "שלום עולם מה שלומך",
    "bidi-override": "abc \u202eevil.exe\u202c \u2067isolate\u2069 done",
    "combining": "e\u0301 n\u0303 Z\u0334\u0321\u035da\u0337l\u0336g\u0338o",
    "zero-width": "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffjoined",
    "control": "a\x00b\x01c\x1b[31mred\x7f\x85\r\nnext\tline\x0b\x0c",
    "nul-only": "\x00",
    "astral": "\U0001d54f\U0001d552\U0001d55b \U0010fffd \ue000",
}
ONE_CHAR = ["a", "?", "é", "字", "😀", "\x00"]
SPECIAL = {
    "bos": "<bos>",
    "eos": "<eos>",
    "turns": "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "mixed": "text <bos> more <eos><pad><unk><mask> end",
}
XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)></iframe>",
    '<b>bold</b><i>it</i><span class="attn-tok">fake</span><br>',
    "&lt;already escaped&gt; &amp; <!-- comment --> <![CDATA[x]]>",
    "<style>*{display:none}</style>",
    "</div></span></mark><div onclick=alert(1)>",
    "<foreignObject><body onload=alert(1)></body></foreignObject>",
    "$\\alpha$ {{7*7}} ${7*7} <%= 7*7 %>",
]

# ---- structural checks on rendered fragments -------------------------------------------

SVG_FORBIDDEN = {"script", "img", "image", "foreignobject", "iframe", "object", "embed", "a", "use", "animate", "set"}


def text_of(fragment: str, **kw) -> str:
    return "".join(audit_html(fragment, **kw).text)


def structure(fragment: str) -> list:
    return audit_html(fragment, images=True).elements


def audit_svg(svg: bytes) -> str:
    """Parse the line diagram's SVG: no active or embedding element, no event handler, no
    link; returns its text."""
    raw = svg.decode("utf-8")
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    for el in root.iter():
        local = el.tag.rsplit("}", 1)[-1].lower()
        assert local not in SVG_FORBIDDEN, f"<{local}> in the SVG"
        for name, value in el.attrib.items():
            short = name.rsplit("}", 1)[-1].lower()
            assert not short.startswith("on"), f"event handler {name} in the SVG"
            assert short != "href", f"link {name}={value!r} in the SVG"
            assert "javascript:" not in value.lower()
    lowered = raw.lower()
    for tag in ("<script", "<img", "<foreignobject", "<iframe", "<body", "<style>*"):
        assert tag not in lowered, f"{tag} written raw into the SVG"
    return "".join(root.itertext())


def svg_structure(svg: bytes) -> list[str]:
    return [el.tag for el in ET.fromstring(svg).iter()]


def plain(text: str) -> str:
    """Same length, no markup, no whitespace: the benign twin of a user string."""
    return "x" * len(text)


def benign_twin(analysis):
    """The same analysis with every user-derived string replaced by plain letters."""
    return dataclasses.replace(
        analysis,
        prompt=plain(analysis.prompt),
        tokens=[analysis.tokens[0]] + [plain(t) for t in analysis.tokens[1:]],
        next_token=plain(analysis.next_token),
        top_k=[TokenProb(plain(t.token), t.id, t.prob) for t in analysis.top_k],
    )


VIEWS = [View(layer=0), View(layer=5, head="max", bos="hide"), View(layer=12, head=2, bos="exclude", show_all=True)]


def render_all(analysis) -> dict[str, str]:
    out = {f"tokens-{i}": token_html(analysis, v) for i, v in enumerate(VIEWS)}
    out["continuation"] = continuation_html(analysis)
    out["topk"] = top_k_html(analysis)
    out["heatmap"] = heatmap_html(analysis, View(layer=3))
    out["heatmap-exclude"] = heatmap_html(analysis, View(layer=0, head=1, bos="exclude", measure="value"))
    return out


def assert_renders_inert(analysis, *, svg: bool = True) -> dict[str, str]:
    """Every HTML view (and the line diagram) of `analysis`: only our markup, and exactly
    the structure of its benign twin. Returns each fragment's text."""
    twin = benign_twin(analysis)
    ours, theirs = render_all(analysis), render_all(twin)
    texts = {}
    for name, fragment in ours.items():
        images = name.startswith("heatmap")
        texts[name] = text_of(fragment, images=images)
        assert structure(fragment) == structure(theirs[name]), f"{name}: user text changed the markup"
    if svg:  # the all-pairs view: every label and line of a short prompt
        fig_svg = to_svg(line_diagram(analysis, VIEWS[2]))
        texts["svg"] = audit_svg(fig_svg)
        assert svg_structure(fig_svg) == svg_structure(to_svg(line_diagram(twin, VIEWS[2])))
    return texts


def shown_token(text: str) -> str:
    """How the highlighted view spells a token's text: newlines marked ↵, tabs ⇥, other
    control characters as \\xNN (see attn.views.highlight._token_text)."""
    out = text.replace("\n", "↵\n").replace("\t", "⇥\t")
    return "".join(ch if ord(ch) >= 32 or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in out)


def tokens_text(fragment: str) -> str:
    """The text of the highlighted-token area (the typed prompt, as the page shows it)."""
    start = fragment.index('<div class="attn-tokens')
    inner = fragment[start:]
    audit = audit_html(inner[: inner.index('<div class="attn-legend"')])
    return "".join(audit.text)


def assert_valid(analysis, prompt: str, special_ids: set[int], bos_id: int) -> None:
    """A valid analysis: the prompt's characters, tiled by spans, rows that are softmax rows,
    and no control token after position 0."""
    assert analysis.prompt == prompt
    n = analysis.num_tokens
    assert n >= 2
    assert analysis.tokens[0] == "<BOS>" and int(analysis.token_ids[0]) == bos_id
    assert len(analysis.token_ids) == len(analysis.spans) == n == analysis.last_row.shape[-1]
    assert "".join(prompt[s:e] for s, e in analysis.spans) == prompt
    leaked = [int(i) for i in analysis.token_ids[1:] if int(i) in special_ids]
    assert leaked == [], f"control tokens {leaked} from typed text"
    assert np.isfinite(analysis.last_row).all() and (analysis.last_row >= 0).all()
    err = float(np.abs(analysis.last_row.astype(np.float64).sum(-1) - 1).max())
    assert err <= ROW_TOL, f"rows sum to 1 ± {err:.2e}"


# ---- engine (in-process, the real bundled model) ---------------------------------------


def fast_few(values, fast, ids=None):
    """Every value as a case; those not in `fast` are marked slow. Each case is a forward pass
    of the real model and every renderer run twice (about a second of CPU, several seconds
    under load), so the fast subset keeps one representative of each sweep and the full run
    all of them."""
    return [
        pytest.param(v, id=None if ids is None else ids[i], marks=() if v in fast else pytest.mark.slow)
        for i, v in enumerate(values)
    ]


@pytest.fixture(scope="module")
def engine(bundled):
    return engine_with(bundled, [MODEL])


@pytest.fixture(scope="module")
def special_ids(bundled) -> set[int]:
    tok = bundled.tokenizer
    ids = {int(i) for i, t in tok.added_tokens_decoder.items() if t.special}
    ids |= {int(i) for i in tok.all_special_ids}
    assert {0, 1, 2, 3, 105, 106} <= ids  # pad, eos, bos, unk, start/end_of_turn
    return ids


@pytest.fixture(scope="module")
def bos_id(bundled) -> int:
    return int(bundled.tokenizer.bos_token_id)


@pytest.mark.parametrize("prompt", ["", " ", "\n\t  \r\n", "\u3000\u2003\u00a0\u2028", "\x1c\x1d\x1e\x1f"],
                         ids=["empty", "space", "whitespace", "unicode-spaces", "separators"])
def test_engine_refuses_an_empty_prompt(engine, prompt):
    with pytest.raises(PromptError) as info:
        engine.analyze(prompt, MODEL)
    assert str(info.value) == EMPTY_MSG
    assert engine.cached(prompt, MODEL) is None


@pytest.mark.parametrize("prompt", [None, 42, b"bytes", ["a list"]], ids=["none", "int", "bytes", "list"])
def test_engine_refuses_a_prompt_that_is_not_text(engine, prompt):
    with pytest.raises(PromptError, match="The prompt must be text."):
        engine.analyze(prompt, MODEL)


@pytest.mark.parametrize("prompt", fast_few(ONE_CHAR, fast={"\x00"}))
def test_engine_analyses_one_character(engine, special_ids, bos_id, prompt):
    analysis = engine.analyze(prompt, MODEL)
    assert_valid(analysis, prompt, special_ids, bos_id)
    assert_renders_inert(analysis, svg=False)


def test_over_the_token_limit_names_the_limit(engine):
    before = engine.cache_stats().entries
    with pytest.raises(PromptError) as info:
        engine.analyze(OVER_LIMIT, MODEL)
    msg = str(info.value)
    assert msg == "The prompt is 2,101 tokens long (with <BOS>); the limit is 2,048 tokens."
    with pytest.raises(PromptError, match=r"too long \(204,801 characters\); the limit is 2,048 tokens"):
        engine.analyze(OVER_CHARS, MODEL)
    assert engine.cache_stats().entries == before
    assert engine.analyze(THIRSTY, MODEL).next_token == " water"  # still serving


def test_the_token_limit_is_exact(bundled):
    """max_tokens counts <BOS>: 7 prompt tokens fit a limit of 8, 8 do not."""
    small = engine_with(bundled, [MODEL], max_tokens=8)
    assert small.analyze(" the" * 7, MODEL).num_tokens == 8
    with pytest.raises(PromptError, match=r"^The prompt is 9 tokens long \(with <BOS>\); the limit is 8 tokens\.$"):
        small.analyze(" the" * 8, MODEL)


@pytest.mark.parametrize("name", fast_few(list(UNICODE), fast={"control"}))
def test_engine_analyses_any_script_and_renders_it_as_text(engine, special_ids, bos_id, name):
    prompt = UNICODE[name]
    analysis = engine.analyze(prompt, MODEL)
    assert_valid(analysis, prompt, special_ids, bos_id)
    texts = assert_renders_inert(analysis)
    # The highlighted tokens show the typed characters (newlines marked ↵, control
    # characters spelled \\xNN), and the continuation shows the prompt itself.
    shown = tokens_text(token_html(analysis, VIEWS[0]))
    pieces = [prompt[s:e] or analysis.tokens[i] for i, (s, e) in enumerate(analysis.spans) if i]
    assert shown.startswith("<BOS> ")
    assert "".join(shown_token(p) for p in pieces) in shown
    assert prompt[-400:] in texts["continuation"]


@pytest.mark.parametrize("name", fast_few(list(SPECIAL), fast={"mixed"}))
def test_special_token_text_is_split_into_ordinary_tokens(engine, special_ids, bos_id, name):
    prompt = SPECIAL[name]
    analysis = engine.analyze(prompt, MODEL)
    assert_valid(analysis, prompt, special_ids, bos_id)
    ids = [int(i) for i in analysis.token_ids]
    assert ids[0] == 2 and 2 not in ids[1:] and 1 not in ids[1:]
    assert not {105, 106} & set(ids)
    assert "".join(analysis.tokens[1:]) == prompt  # "<", "bos", ">": ordinary text


@pytest.mark.parametrize("payloads", fast_few([XSS[:5], XSS[5:]], fast=[XSS[:5]],
                                              ids=["tags", "escapes-and-templates"]))
def test_typed_markup_renders_as_text_everywhere(engine, special_ids, bos_id, payloads):
    prompt = "Look: " + " then ".join(payloads) + " and"
    analysis = engine.analyze(prompt, MODEL)
    assert_valid(analysis, prompt, special_ids, bos_id)
    texts = assert_renders_inert(analysis)
    assert prompt in texts["continuation"]
    assert prompt in tokens_text(token_html(analysis, VIEWS[0]))
    # The line diagram's labels are the tokens: "<" reaches the SVG only escaped.
    svg = to_svg(line_diagram(analysis, VIEWS[0], max_columns=analysis.num_tokens))
    labels = audit_svg(svg)
    assert "<" in labels and b"&lt;" in svg and b"<script" not in svg.lower()


@pytest.mark.parametrize("payload", XSS)
def test_markup_in_tokens_prediction_and_top_k_renders_as_text(engine, payload):
    """Model output is user-influenced too: hostile token strings, predicted token and
    top-k entries (fabricated around a real analysis) stay text in every view."""
    base = engine.analyze(THIRSTY, MODEL)
    n = base.num_tokens - 1
    hostile = dataclasses.replace(
        base,
        prompt=payload * n,
        tokens=["<BOS>"] + [payload] * n,
        spans=[(0, 0)] + [(i * len(payload), (i + 1) * len(payload)) for i in range(n)],
        next_token=payload,
        top_k=[TokenProb(payload, t.id, t.prob) for t in base.top_k],
    )
    texts = assert_renders_inert(hostile)
    assert texts["continuation"].endswith(payload)  # the predicted token, as text
    assert tokens_text(token_html(hostile, VIEWS[0])).endswith(payload)  # the marked prediction
    assert repr(payload) in texts["topk"]
    assert repr(payload) in texts["tokens-0"]  # the caption names the prediction
    assert payload in texts["svg"] or visible(payload, 12) in texts["svg"]


@pytest.mark.slow  # a prompt over CELL_LIMIT tokens, rendered twice over: a few seconds of CPU
def test_a_long_hostile_prompt_uses_the_heatmap_image_and_stays_inert(engine, special_ids, bos_id):
    prompt = "<img src=x onerror=alert(1)> <b>x</b> " * 16
    analysis = engine.analyze(prompt, MODEL)
    assert analysis.num_tokens > CELL_LIMIT  # the image path of the heatmap
    assert_valid(analysis, prompt, special_ids, bos_id)
    assert_renders_inert(analysis)
    assert "<img alt=" in heatmap_html(analysis, View(layer=0))


# ---- once-known bugs, kept as regression tests -------------------------------------------

MATH_PROMPT = "Display equations use double dollars: $$E=mc^2"


def test_line_diagram_survives_a_math_like_predicted_token(engine):
    analysis = engine.analyze(MATH_PROMPT, MODEL)
    assert analysis.next_token.count("$") >= 2  # the model itself predicts '$$' here
    audit_svg(to_svg(line_diagram(analysis, View(layer=12))))


@pytest.mark.parametrize("token", ["$$", " $$", ").$$", "$\\frac{$"])
def test_line_diagram_survives_any_dollar_token(engine, token):
    analysis = dataclasses.replace(engine.analyze(THIRSTY, MODEL), next_token=token)
    audit_svg(to_svg(line_diagram(analysis, View(layer=12))))


@pytest.mark.parametrize("prompt", ["\ud800", "ok \udfff then"], ids=["lone-high", "lone-low"])
def test_a_lone_surrogate_is_a_prompt_error(engine, prompt):
    with pytest.raises(PromptError):
        engine.analyze(prompt, MODEL)


@pytest.mark.parametrize("layer", [3.7, float("inf"), -float("inf")], ids=["fraction", "inf", "-inf"])
def test_a_non_integral_layer_is_a_view_error(engine, layer):
    analysis = engine.analyze(THIRSTY, MODEL)
    with pytest.raises(ViewError, match="Layer must be a whole number"):
        check_view(analysis, View(layer=layer))


def test_bad_views_are_view_errors(engine):
    analysis = engine.analyze(THIRSTY, MODEL)
    cases = {
        View(layer=18): "Layer 18 is out of range: this model has layers 0-17.",
        View(layer=-1): "Layer -1 is out of range: this model has layers 0-17.",
        View(layer=2**70): f"Layer {2**70} is out of range: this model has layers 0-17.",
        View(layer="<b>1</b>"): "Layer must be a whole number, not 'b1b'.",
        View(layer=float("nan")): "Layer must be a whole number, not 'nan'.",
        View(layer=None): "Layer must be a whole number, not 'None'.",
        View(layer=0, head=4): "Head 4 is out of range: this model has heads 0-3.",
        View(layer=0, head="Head -1"): "Head -1 is out of range: this model has heads 0-3.",
        View(layer=0, head="<script>"): "Head must be 'mean', 'max' or a head number, not 'script'.",
        View(layer=0, bos="<i>x</i>"): "BOS mode must be one of gray, hide, exclude.",
    }
    for view, expected in cases.items():
        with pytest.raises(ViewError) as info:
            check_view(analysis, view)
        assert str(info.value) == expected


# ---- the API (gradio_client against the real app) ---------------------------------------

@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def api_error(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    msg = str(info.value)
    assert "Traceback" not in msg
    return msg


def assert_serving(client, app) -> None:
    """A good request right after: the server still answers, with the right numbers."""
    assert app.alive()
    view = client.predict(THIRSTY, MODEL, 12, "mean", "gray", api_name="/view")
    assert view["next_token"] == " water" and math.isclose(sum(view["weights"]), 1.0, abs_tol=ROW_TOL)


def assert_valid_json(result: dict, prompt: str) -> None:
    assert result["prompt"] == prompt  # the exact characters round-trip
    spans, ids = result["spans"], result["token_ids"]
    assert result["tokens"][0] == "<BOS>" and ids[0] == 2
    assert "".join(prompt[a:b] for a, b in spans) == prompt
    assert not {0, 1, 2, 3, 105, 106} & set(ids[1:])
    for layer in result["attention"]:
        for head_row in layer:
            assert len(head_row) == len(ids)
            assert math.isclose(sum(head_row), 1.0, abs_tol=ROW_TOL)


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("", EMPTY_MSG),
        ("  \n\t \u3000", EMPTY_MSG),
        (OVER_LIMIT, "The prompt is 2,101 tokens long (with <BOS>); the limit is 2,048 tokens."),
        (OVER_CHARS, "The prompt is too long (204,801 characters); the limit is 2,048 tokens."),
    ],
    ids=["empty", "whitespace", "over-token-limit", "over-char-limit"],
)
def test_api_bad_prompt_is_a_readable_error_and_the_server_keeps_serving(client, app, prompt, expected):
    assert api_error(lambda: client.predict(prompt, MODEL, api_name="/analyze")) == expected
    assert api_error(lambda: client.predict(prompt, MODEL, 0, "mean", "gray", api_name="/view")) == expected
    assert_serving(client, app)


@pytest.mark.parametrize("name", ["one-char", "nul"] + list(UNICODE) + list(SPECIAL))
def test_api_analyses_any_text_exactly(client, name):
    prompt = {"one-char": "字", "nul": "\x00", **UNICODE, **SPECIAL}[name]
    result = client.predict(prompt, MODEL, api_name="/analyze")
    assert_valid_json(result, prompt)
    view = client.predict(prompt, MODEL, 5, "max", "exclude", api_name="/view")
    assert view["tokens"] == result["tokens"] and view["next_token"] == result["next_token"]


@pytest.mark.parametrize(
    "model",
    ["gpt2", "../../etc/passwd", "/tmp/x", "google/gemma-3-1b-pt", "<img src=x onerror=alert(1)>", "", "m" * 5000,
     "gemma-3-270m\x00"],
    ids=["gpt2", "traversal", "abs-path", "hub-id", "markup", "empty", "huge", "nul-suffix"],
)
def test_api_unknown_model_is_a_short_markup_free_message(client, app, model):
    msg = api_error(lambda: client.predict("Hello", model, api_name="/analyze"))
    assert msg.startswith("Unknown model '") and msg.endswith("Choose one of: gemma-3-1b, gemma-3-270m.")
    quoted = msg[len("Unknown model '"): msg.index("'. Choose")]
    assert re.fullmatch(r"[A-Za-z0-9 ._-]*…?", quoted), quoted  # nothing that could form markup or a path
    assert len(msg) < 160
    msg = api_error(lambda: client.predict("Hello", model, 0, "mean", "gray", api_name="/view"))
    assert msg.startswith("Unknown model '")
    assert_serving(client, app)


@pytest.mark.parametrize(
    "layer, head, bos, expected",
    [
        (2**40, "mean", "gray", "Layer 1099511627776 is out of range: this model has layers 0-17."),
        (-(2**40), "mean", "gray", "Layer -1099511627776 is out of range: this model has layers 0-17."),
        ("abc", "mean", "gray", "Layer must be a whole number, not 'abc'."),
        ("<script>", "mean", "gray", "Layer must be a whole number, not 'script'."),
        (0, "-1", "gray", "Head -1 is out of range: this model has heads 0-3."),
        (0, "4", "gray", "Head 4 is out of range: this model has heads 0-3."),
        (0, "<img src=x onerror=alert(1)>", "gray",
         "Head must be 'mean', 'max' or a head number, not 'img srcx onerroralert1'."),
        (0, "mean", "<b>x</b>", "BOS mode must be one of gray, hide, exclude."),
    ],
    ids=["layer-huge", "layer-huge-neg", "layer-word", "layer-markup", "head-neg", "head-4", "head-markup",
         "bos-markup"],
)
def test_api_bad_view_is_a_readable_error(client, app, layer, head, bos, expected):
    msg = api_error(lambda: client.predict(THIRSTY, MODEL, layer, head, bos, api_name="/view"))
    assert msg == expected
    assert_serving(client, app)


# ---- the page (a few representative cases in a real browser) ---------------------------

T = 60_000  # ms


@pytest.fixture
def page(browser, app):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(T)
    page = ctx.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    ctx.close()


def open_app(page, app, query: dict | None = None) -> None:
    from playwright.sync_api import expect

    page.goto(app.url + ("?" + urlencode(query) if query else ""))
    expect(page.locator("#analyze")).to_be_visible(timeout=T)
    expect(page.locator("#prompt textarea")).not_to_have_value("", timeout=T)


def wait_rendered(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#figure img")).to_be_visible(timeout=T)
    expect(page.locator("#tokens .attn-tok").first).to_be_attached(timeout=T)
    expect(page.locator("#overview .attn-heatmap")).to_be_visible(timeout=T)


def assert_page_inert(page) -> None:
    page.wait_for_timeout(300)  # let a would-be onerror/onload fire
    injected = page.evaluate(
        """() => document.querySelectorAll(
             '#tokens img, #continuation img, #topk img, #overview script, #tokens script, #continuation script,'
             + ' #topk li, #tokens li, #continuation li, img[src="x"], [onerror], [onload], [onclick], iframe'
           ).length"""
    )
    assert injected == 0
    assert page.dialogs == []


def over_limit_toast(page) -> str:
    """On the open page, type a prompt over the limit, press Analyze, and return the error
    toast's text."""
    from playwright.sync_api import expect

    page.locator("#prompt textarea").fill(OVER_LIMIT)
    page.click("#analyze")
    toast = page.get_by_test_id("toast-body").first
    expect(toast).to_contain_text("The prompt is 2,101 tokens long", timeout=T)
    return toast.inner_text()


def test_page_over_the_limit_says_so_then_analyses_the_next_prompt(page, app):
    from playwright.sync_api import expect

    open_app(page, app)
    wait_rendered(page)  # the page opens with the first preset drawn
    first_sight = page.locator("#figure img").get_attribute("src")
    over_limit_toast(page)
    expect(page.locator("#prompt-note")).to_contain_text("The views below still show the last analysis.", timeout=T)
    assert page.locator("#figure img").get_attribute("src") == first_sight  # nothing drawn for the refused prompt
    good = "After the long one, a short prompt about the"
    page.locator("#prompt textarea").fill(good)
    page.click("#analyze")
    wait_rendered(page)
    expect(page.locator("#continuation")).to_contain_text(good, timeout=T)
    assert page.errors == []


def test_page_over_the_limit_toast_names_the_limit(page, app):
    open_app(page, app)
    text = over_limit_toast(page)
    assert "the limit is 2,048 tokens" in text, text


def toast_texts(page, *needles: str) -> str:
    """All toasts' text, once every needle has appeared (they arrive one by one)."""
    deadline = time.monotonic() + T / 1000
    while True:
        text = " ".join(page.get_by_test_id("toast-body").all_inner_texts())
        if all(n in text for n in needles) or time.monotonic() > deadline:
            return text
        page.wait_for_timeout(100)


def test_page_hostile_deep_link_falls_back_and_renders_as_text(page, app):
    from playwright.sync_api import expect

    prompt = "مرحبا 👩‍🚀 字 <b>bold?</b> <img src=x onerror=alert(1)> and"
    open_app(page, app, {
        "prompt": prompt,
        "model": "<img src=x onerror=alert(2)>",
        "layer": "<script>alert(3)</script>",
        "head": '"><svg onload=alert(4)>',
        "bos": "<iframe src=javascript:alert(5)>",
        "all": "<b>",
    })
    notes = toast_texts(page, "Unknown model in the link", "not a number", "Head must be", "Unknown BOS mode")
    for needle in ("Unknown model in the link", "not a number", "Head must be", "Unknown BOS mode"):
        assert needle in notes, notes
    wait_rendered(page)
    expect(page.locator("#prompt textarea")).to_have_value(prompt)
    expect(page.locator("#model input")).to_have_value(re.compile("Gemma 3 270M"))
    expect(page.locator("#head input")).to_have_value("Mean over heads")
    expect(page.locator("#bos input[value=gray]")).to_be_checked()
    info = page.locator("#layer-info").inner_text()
    assert info.startswith("Layer 12 of 17"), info  # the suggested layer: the link's was not a number
    assert prompt in page.locator("#tokens .attn-tokens").inner_text()
    assert prompt in page.locator("#continuation").inner_text()
    # The link to this view carries the typed text as data, exactly.
    page.click("#copy-link")
    link = page.locator("#link textarea")
    expect(link).to_have_value(re.compile(r"prompt="), timeout=T)
    query = parse_qs(urlsplit(link.input_value()).query)
    assert query["prompt"] == [prompt] and query["model"] == [MODEL] and query["layer"] == ["12"]
    assert_page_inert(page)


def test_page_deep_link_out_of_range_layer_and_head_fall_back(page, app):
    from playwright.sync_api import expect

    open_app(page, app, {"prompt": THIRSTY, "model": MODEL, "layer": -3, "head": -1})
    notes = toast_texts(page, "Layer -3 is out of range", "Head -1 is out of range")
    assert "Layer -3 is out of range for Gemma 3 270M" in notes and "(0-17)" in notes, notes
    assert "Head -1 is out of range (0-3). Using the mean over heads." in notes, notes
    wait_rendered(page)
    # Retried: a progress timer can still sit in the line for a moment after the render.
    expect(page.locator("#layer-info")).to_have_text(re.compile(r"^\s*Layer 0 of 17\b.*mean over heads", re.S))
    expect(page.locator("#continuation")).to_contain_text(THIRSTY + " water")
    assert_page_inert(page)


def test_page_markup_typed_and_predicted_stays_text(page, app, client):
    from playwright.sync_api import expect

    prompt = "<ul>\n<li>one</li>\n<li>two</li>\n"
    predicted = client.predict(prompt, MODEL, api_name="/analyze")["next_token"]
    assert predicted == "<li>"  # the model continues the list: its prediction is markup too
    open_app(page, app)
    page.locator("#prompt textarea").fill(prompt)
    page.click("#analyze")
    wait_rendered(page)
    expect(page.locator("#tokens .attn-pred")).to_have_text("<li>", timeout=T)
    expect(page.locator("#continuation mark")).to_have_text("<li>")
    expect(page.locator("#topk")).to_contain_text("'<li>'")
    assert "<li>one</li>" in page.locator("#continuation").inner_text()
    assert_page_inert(page)
    assert page.errors == []
