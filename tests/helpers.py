"""Helpers several test modules share: the page's preset prompts, the one way a test builds an
Engine, a fast stand-in for the GGUF conversion, the HTML audit of rendered fragments, and
polling until something holds.

Fixtures live in conftest.py; this module holds plain functions and classes, imported as
`from helpers import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from attn.compute.analysis import Analysis, TokenProb
from attn.compute.engine import Engine
from attn.compute.store import Store
from attn.model.identity import ModelIdentity
from attn.model.registry import BUNDLED
from attn.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# The page's presets (examples.json), the prompts most tests analyse: THIRSTY is the lab's.
EXAMPLES = json.loads((ROOT / "examples.json").read_text(encoding="utf-8"))
PRESETS = [example["prompt"] for example in EXAMPLES]
_PRESET = {example["name"]: example["prompt"] for example in EXAMPLES}
HUNGRY, THIRSTY, ARTIST = _PRESET["Hungry"], _PRESET["Thirsty"], _PRESET["Artist passage"]

# Where the tests find the converted bundled model (the caller's ATTN_CACHE_DIR, else the
# user's cache), and the settings they load models with: on the CPU in float32 unless the
# caller chose a device with ATTN_DEVICE (the numbers the tests check are float32 numbers).
CACHE_DIR = Path(os.environ.get("ATTN_CACHE_DIR") or "~/.cache/attn-demo").expanduser()
SETTINGS = Settings(cache_dir=CACHE_DIR, device=os.environ.get("ATTN_DEVICE") or "cpu")


# ---- an engine -------------------------------------------------------------------------------


def engine_with(model, names=(BUNDLED,), **options) -> Engine:
    """An Engine offering `names`, each served by `model`: a LoadedModel, or a loader
    `(name, progress) -> LoadedModel` for a test that counts, delays or fails loads.
    `options`: Engine's own (cache_bytes, max_tokens, accelerator)."""
    loader = model if callable(model) else (lambda name, progress: model)
    return Engine(loader=loader, model_names=list(names), **options)


# ---- the analysis store ----------------------------------------------------------------------

# The identity test stores key their records by (attn/model/identity.py): no model files needed.
IDENTITY = ModelIdentity(BUNDLED, "test-digest", "float32", "cpu")


def store_engine(model, directory, names=(BUNDLED,), *, identity: ModelIdentity = IDENTITY,
                 store_bytes: int = 1 << 30, shipped=(), **options) -> Engine:
    """engine_with(model, names) with an analysis store in `directory` (read-only layers
    `shipped` after it), its records keyed by `identity` (renamed for each model)."""
    store = Store(directory, store_bytes, shipped)
    return engine_with(model, names, store=store, identify=lambda name, loaded: _renamed(identity, name), **options)


def _renamed(identity: ModelIdentity, name: str) -> ModelIdentity:
    return ModelIdentity(name, identity.digest, identity.dtype, identity.device)


# ---- waiting -------------------------------------------------------------------------------


def wait_until(check, what: str = "the condition", timeout_s: float = 20.0, poll: float = 0.05):
    """Poll `check` until it returns something truthy and return that; fail with a short
    message after `timeout_s` (unlike expect() on a data: URL of tens of kB)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll)


# ---- the GGUF conversion, in a few milliseconds ----------------------------------------------


class FakeConversion:
    """Stands in for attn.model.bundled._convert (the GGUF conversion): writes a tiny random
    Gemma 3 and the given tokenizer into the work directory. Like the real one it leaves a
    partial model.gguf there when it fails (`fail=True`)."""

    def __init__(self, tiny, tokenizer, fail: bool = False, seed: int = 3):
        self.tiny = tiny
        self.tokenizer = tokenizer
        self.fail = fail
        self.seed = seed
        self.workdirs: list[Path] = []

    @property
    def calls(self) -> int:
        return len(self.workdirs)

    def __call__(self, workdir: Path, progress):
        workdir = Path(workdir)
        self.workdirs.append(workdir)
        progress("Fake conversion")
        (workdir / "model.gguf").write_bytes(b"partial")  # as the real one leaves behind
        if self.fail:
            raise RuntimeError("conversion died")
        (workdir / "model.gguf").unlink()
        model = self.tiny.gemma3(vocab_size=len(self.tokenizer), num_layers=6, seed=self.seed)
        model.save_pretrained(workdir)
        self.tokenizer.save_pretrained(workdir)


# ---- the HTML our renderers emit ---------------------------------------------------------------

HTML_TAGS = {"div", "span", "b", "i", "code", "mark", "br"}
HTML_ATTRS = {"class", "style", "title", "data-pos", "data-weight", "data-layer", "data-p-next", "data-delta"}
# Accessibility (issue 19): focusable scroll boxes, weights read out, tables for screen readers.
HTML_TAGS |= {"table", "caption", "thead", "tbody", "tr", "th", "td"}
HTML_ATTRS |= {"tabindex", "role", "aria-label", "scope", "data-percent"}
FIXED_VALUES = {"tabindex": {"0"}, "role": {"group"}, "scope": {"col", "row"}}
NUMERIC = re.compile(r"^-?[0-9.]+$")
STYLE = re.compile(r"^[A-Za-z0-9:;#%.,()\s_/-]*$")  # our inline styles: no quotes, no <, no backslash
CLASSES = re.compile(r"^[a-z0-9 -]*$")


class HtmlAudit(HTMLParser):
    """Everything in an HTML fragment: elements (tag and the attributes that shape the
    page), every attribute, the text, and anything else (comments, declarations)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, tuple]] = []  # (tag, attributes that shape the page)
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attrs.extend((tag, k, v) for k, v in attrs)
        shape = tuple((k, v) for k, v in attrs if k in ("class", "style") or k.startswith("data-"))
        self.elements.append((tag, tuple(sorted(k for k, _ in attrs)) + shape))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl):
        self.other.append(f"decl {decl!r}")

    def handle_pi(self, data):
        self.other.append(f"pi {data!r}")

    def unknown_decl(self, data):
        self.other.append(f"unknown {data!r}")


def audit_html(fragment: str, *, images: bool = False) -> HtmlAudit:
    """Parse an HTML fragment and check it holds only the markup our renderers emit
    (with `images`, also a data:image/png <img>)."""
    audit = HtmlAudit()
    audit.feed(fragment)
    audit.close()
    assert audit.other == [], audit.other
    for tag, _ in audit.elements:
        assert tag in HTML_TAGS or (images and tag == "img"), f"unexpected element <{tag}>"
    for tag, name, value in audit.attrs:
        assert not name.startswith("on"), f"event handler {name}={value!r} on <{tag}>"
        if tag == "img":
            assert name in ("alt", "src", "style"), name
            if name == "src":
                assert value.startswith("data:image/png;base64,"), value[:40]
            continue
        assert name in HTML_ATTRS, f"unexpected attribute {name}={value!r} on <{tag}>"
        if name == "style":
            assert STYLE.match(value or ""), f"style carries foreign text: {value!r}"
            assert not re.search(r"url\(|expression\(|javascript", value, re.I), value
        elif name == "class":
            assert CLASSES.match(value or ""), value
        elif name.startswith("data-"):
            assert NUMERIC.match(value or ""), f"{name}={value!r}"
        elif name in FIXED_VALUES:
            assert value in FIXED_VALUES[name], f"{name}={value!r}"
    return audit


def made_up(tokens: list[str], *, seed: int = 0) -> Analysis:
    """A hand-made analysis (no model) of these tokens (after <BOS>): random rows, two global layers."""
    rng = np.random.default_rng(seed)
    tokens = ["<BOS>", *tokens]
    weights = rng.random((2, 2, len(tokens))).astype(np.float32)
    weights /= weights.sum(axis=-1, keepdims=True)
    ends = np.cumsum([0] + [len(t) for t in tokens[1:]]).tolist()
    return Analysis(
        model="made-up", model_source="test", dtype="float32", prompt="".join(tokens[1:]), tokens=tokens,
        token_ids=np.arange(len(tokens), dtype=np.int64), spans=[(0, 0)] + list(zip(ends[:-1], ends[1:])),
        next_token=" next", next_token_id=1, top_k=[TokenProb(" next", 1, 0.5)],
        layer_types=["global", "global"], sliding_window=None, num_heads=2, last_row=weights, full=None,
    )


def unavailable(reason: str) -> None:
    """What the browser tests need is missing: they skip, saying why, unless
    ATTN_REQUIRE_BROWSER=1 (as in CI) makes that a failure."""
    import pytest

    if os.environ.get("ATTN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ATTN_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


# ---- another site ----------------------------------------------------------------------------


@contextmanager
def another_site(body: str) -> Iterator[str]:
    """A page with `body` (an iframe of the app, as a course page embeds it) served from
    another origin, by an http.server of its own: yields its address."""
    folder = Path(tempfile.mkdtemp(prefix="attn-site-"))
    (folder / "index.html").write_text(f"<!doctype html><meta charset=utf-8>{body}", encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
