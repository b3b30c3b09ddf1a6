"""Property tests (hypothesis) on the real bundled Gemma 3 270M.

For any text: either a valid analysis (softmax rows, spans that join back to exactly the
prompt, no control token after <BOS>) or the documented PromptError; and the rendered
views never contain markup that came from the text.

The examples are derandomized (a fixed, reproducible set per code version) so the suite
is deterministic; set ATTN_HYPOTHESIS_EXPLORE=1 for fresh random examples on each run.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from attn import BUNDLED, PromptError, TokenProb, View
from attn.views.diagram import line_diagram
from attn.views.drawing import to_svg
from attn.views.heatmap import heatmap_html
from attn.views.highlight import token_html
from attn.views.summary import continuation_html, top_k_html
from helpers import audit_html, engine_with

EXPLORE = os.environ.get("ATTN_HYPOTHESIS_EXPLORE") == "1"
SETTINGS = dict(
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROW_TOL = 1e-4


@pytest.fixture(scope="module")
def engine(bundled):
    return engine_with(bundled)


@pytest.fixture(scope="module")
def special_ids(bundled) -> set[int]:
    tok = bundled.tokenizer
    return {int(i) for i, t in tok.added_tokens_decoder.items() if t.special} | set(tok.all_special_ids)


@pytest.mark.slow  # 40 forward passes of the real model (about 30 s)
@settings(max_examples=40, **SETTINGS)
@given(prompt=st.text())
@example(prompt="")
@example(prompt=" \t\n")
@example(prompt="<bos><eos><start_of_turn>user")
@example(prompt="<script>alert(1)</script><img src=x onerror=alert(1)>")
@example(prompt="\x00\x01\x1b\x7f")
@example(prompt="👩‍🚀 日本 مرحبا e\u0301 \u200b")
def test_any_text_is_a_valid_analysis_or_a_prompt_error(engine, special_ids, prompt):
    try:
        analysis = engine.analyze(prompt, BUNDLED)
    except PromptError as exc:
        assert str(exc)  # a message fit to show
        assert not prompt.strip() or "limit" in str(exc) or "no tokens" in str(exc), str(exc)
        return
    assert prompt.strip(), "a blank prompt was analysed"
    assert analysis.prompt == prompt
    assert "".join(prompt[s:e] for s, e in analysis.spans) == prompt
    assert analysis.spans[0] == (0, 0) and analysis.tokens[0] == "<BOS>"
    assert len(analysis.spans) == len(analysis.tokens) == len(analysis.token_ids) == analysis.last_row.shape[-1]
    ids = [int(i) for i in analysis.token_ids]
    assert not special_ids & set(ids[1:]), "typed text became a control token"
    rows = analysis.last_row.astype(np.float64)
    assert np.isfinite(rows).all() and (rows >= 0).all()
    assert np.abs(rows.sum(-1) - 1).max() <= ROW_TOL

    html = token_html(analysis, View(layer=analysis.num_layers - 1, head="max", bos="exclude"))
    audit_html(html, images=True)
    rollout = View(layer=0, head=0, bos="hide", measure="rollout")
    for fragment in (continuation_html(analysis), top_k_html(analysis), heatmap_html(analysis, rollout)):
        audit_html(fragment, images=True)
    root = ET.fromstring(to_svg(line_diagram(analysis, View(layer=5))))
    names = {el.tag.rsplit("}", 1)[-1].lower() for el in root.iter()}
    assert not names & {"script", "img", "image", "foreignobject", "iframe", "a"}


def fabricated(base, text: str, cut: int):
    """`base` with its prompt, tokens, prediction and top-k replaced by pieces of `text`
    (as a hostile tokenizer or model could produce), spans still tiling the prompt."""
    n = base.num_tokens - 1
    cuts = [0] + [min(len(text), i * cut) for i in range(1, n)] + [len(text)]
    spans = [(0, 0)] + list(zip(cuts[:-1], cuts[1:]))  # late ones empty when the text is short
    tokens = ["<BOS>"] + [text[s:e] or text for s, e in spans[1:]]
    return dataclasses.replace(
        base, prompt=text, tokens=tokens, spans=spans, next_token=text,
        top_k=[TokenProb(text[i:] or text, t.id, t.prob) for i, t in enumerate(base.top_k)],
    )


@pytest.fixture(scope="module")
def base(thirsty_analysis):
    return thirsty_analysis  # conftest's: the bundled model's analysis of THIRSTY, made once


@pytest.mark.slow  # 60 generated texts through five renderers, twice: 2-3 s (test_robustness's markup cases stay fast)
@settings(max_examples=60, **SETTINGS)
@given(text=st.text(min_size=1), cut=st.integers(min_value=1, max_value=7))
@example(text='"><img src=x onerror=alert(1)>', cut=3)
@example(text="<b>x</b>&amp;<!--c--><![CDATA[d]]><?pi?>", cut=2)
@example(text="</div></span><div onclick=alert(1)>", cut=5)
def test_renderers_never_turn_text_into_markup(base, text, cut):
    """Every HTML view of any text: only our tags, no handlers, and the same structure as
    the same analysis with plain letters instead of the text."""
    hostile = fabricated(base, text, cut)
    plain = dataclasses.replace(
        hostile,
        prompt="x" * len(hostile.prompt),
        tokens=["<BOS>"] + ["x" * len(t) for t in hostile.tokens[1:]],
        next_token="x" * len(hostile.next_token),
        top_k=[TokenProb("x" * len(t.token), t.id, t.prob) for t in hostile.top_k],
    )
    for render in (
        lambda a: token_html(a, View(layer=3)),
        lambda a: token_html(a, View(layer=11, head=1, bos="hide")),
        continuation_html,
        top_k_html,
        lambda a: heatmap_html(a, View(layer=2, head="max", bos="exclude")),
    ):
        ours, theirs = audit_html(render(hostile), images=True), audit_html(render(plain), images=True)
        assert ours.elements == theirs.elements, "the text changed the markup"
    shown = "".join(audit_html(continuation_html(hostile), images=True).text)
    assert shown.endswith(hostile.next_token)  # the prediction, as text
