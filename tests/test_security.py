"""Security: only registry names load, no remote code, no user path reaches the disk, the
HF token never leaves the process, the server is not shared publicly and its queue is
bounded.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

import app_server
import attn.model.loading as models
from attn import BUNDLED, REGISTRY, Engine, ModelUnavailableError, UnknownModelError
from helpers import SETTINGS, THIRSTY, engine_with

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SOURCES = sorted((ROOT / "attn").rglob("*.py")) + [ROOT / "app.py"]
HOSTILE_NAMES = [
    "gpt2", "../../etc/passwd", "/tmp/x", "google/gemma-3-1b-pt", "gemma-3-270m/../gemma-3-1b",
    "./gemma-3-270m", "GEMMA-3-270M", " gemma-3-270m", "gemma-3-270m\x00", "~/.cache/attn-demo",
    "file:///etc/passwd", "https://huggingface.co/gpt2", "C:\\models\\x", "",
]


# ---- only registry names -------------------------------------------------------------------


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load weights or a tokenizer from anywhere fails the test."""
    import transformers

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise AssertionError(f"tried to load {args[:1]}")

    for cls in ("AutoModelForCausalLM", "AutoTokenizer", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", refuse)
    monkeypatch.setattr(models, "load_spec", refuse)
    return attempts


@pytest.mark.parametrize("name", HOSTILE_NAMES + [None, 7, ("gemma-3-270m",), ["gemma-3-270m"]])
def test_only_registry_names_can_be_loaded(no_loading, name):
    with pytest.raises(UnknownModelError) as info:
        models.load(name, SETTINGS)
    msg = str(info.value)
    assert msg.startswith("Unknown model '") and msg.endswith(f"Choose one of: {', '.join(REGISTRY)}.")
    assert not re.search(r"[/\\<>:~]", msg.split("Choose")[0]), msg  # no path or markup echoed back
    assert no_loading == []


def test_a_local_directory_name_is_not_loaded(no_loading, tmp_path):
    """Even a real checkpoint-looking directory is not a model name."""
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(UnknownModelError):
        models.load(str(tmp_path), SETTINGS)
    with pytest.raises(UnknownModelError):
        Engine.for_settings(SETTINGS).analyze("Hello", str(tmp_path))
    assert no_loading == []


class SpyLoader:
    def __init__(self):
        self.calls = []

    def __call__(self, name, progress):
        self.calls.append(name)
        raise AssertionError(f"the loader was asked for {name!r}")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_engine_refuses_a_path_like_model_before_any_loader_runs(name):
    spy = SpyLoader()
    engine = engine_with(spy, list(REGISTRY))
    for call in (lambda: engine.analyze("Hello", name), lambda: engine.model(name), lambda: engine.status(name)):
        with pytest.raises(UnknownModelError):
            call()
    engine.preload(name).join(5)  # swallowed in the background, but still never loaded
    assert spy.calls == []
    assert engine.cache_stats().entries == 0


def test_a_registry_model_outside_the_enabled_list_is_refused():
    spy = SpyLoader()
    engine = engine_with(spy)
    with pytest.raises(UnknownModelError, match="is not enabled in this demo"):
        engine.analyze("Hello", "gemma-3-1b")
    assert spy.calls == []


# ---- no remote code ------------------------------------------------------------------------


def assert_keyword_only_false(source: str, keyword: str, path) -> None:
    """Every call in `source` that passes `keyword` passes the literal False, and no
    `**{...}` literal smuggles it in."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == keyword:
                    assert isinstance(kw.value, ast.Constant) and kw.value.value is False, (path, node.lineno)
                if kw.arg is None and isinstance(kw.value, ast.Dict):
                    keys = [k.value for k in kw.value.keys if isinstance(k, ast.Constant)]
                    assert keyword not in keys, (path, node.lineno)


def test_trust_remote_code_is_never_enabled():
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*[=:]\s*(True|1|['\"])", source), path
        assert not re.search(r"['\"]trust_remote_code['\"]\s*:\s*(?!False)", source), path
        assert_keyword_only_false(source, "trust_remote_code", path)


def test_from_pretrained_only_sees_registry_ids_or_the_verified_cache(monkeypatch, tmp_path):
    """Loading each registry model asks transformers for its registry id (spec.hf_id) or, for
    the bundled model, the directory the verified cache handed over; for nothing else."""
    # The model classes first: their first import replaces the `transformers` module in
    # sys.modules (the load does one), and patches on the old module would go unseen.
    from transformers import Gemma3ForCausalLM  # noqa: F401 - imported for its side effect (above)

    # isort: split
    import transformers  # after the classes: the module they left in sys.modules

    from attn.model import bundled

    asked = []

    def tokenizer(source, *args, **kwargs):
        asked.append(str(source))
        return object()

    def model(source, *args, **kwargs):
        asked.append(str(source))
        raise RuntimeError("spy: no weights here")

    def tokenizer_from_file(*args, tokenizer_file, **kwargs):  # how the bundled cache is read
        asked.append(str(Path(tokenizer_file).parent))
        return object()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(transformers, "PreTrainedTokenizerFast", tokenizer_from_file)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(bundled, "ensure_checkpoint", lambda *args, **kwargs: (tmp_path, None))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = replace(SETTINGS, hf_token="hf_notARealToken")  # gated models get as far as from_pretrained
    for spec in REGISTRY.values():
        with pytest.raises((RuntimeError, ModelUnavailableError), match="spy: no weights here"):
            models.load_spec(spec, settings, lambda msg: None)
    allowed = {spec.hf_id for spec in REGISTRY.values() if spec.hf_id} | {str(tmp_path)}
    assert set(asked) == allowed, asked  # each model asked once for the tokenizer, once for the weights
    assert len(asked) == 2 * len(REGISTRY)


# ---- the HF token never leaves the process ---------------------------------------------------


@pytest.fixture
def secret(monkeypatch) -> str:
    token = f"hf_attnTestSecret{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    return token


def test_the_token_is_not_in_a_failed_load(secret, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    settings = replace(SETTINGS, hf_token=secret)
    engine = Engine.for_settings(settings)
    with pytest.raises(ModelUnavailableError) as info:
        models.load("gemma-3-1b", settings)
    with pytest.raises(ModelUnavailableError) as via_engine:
        engine.analyze("Hello", "gemma-3-1b")
    out, err = capfd.readouterr()
    for text in (str(info.value), str(via_engine.value), engine.status("gemma-3-1b")[1], caplog.text, out, err,
                 repr(info.value.args)):
        assert secret not in text
    assert str(info.value).startswith("Gemma 3 1B (pretrained) could not be loaded from google/gemma-3-1b-pt")


def test_a_hub_error_that_echoes_the_token_is_redacted(secret, monkeypatch, caplog, capfd):
    import transformers

    def leaky(*args, token=None, **kwargs):
        raise OSError(f"401 Client Error for url with token {token}: invalid credentials")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", leaky)
    caplog.set_level(logging.DEBUG)
    engine = Engine.for_settings(replace(SETTINGS, hf_token=secret))
    with pytest.raises(ModelUnavailableError) as info:
        engine.analyze("Hello", "gemma-3-1b")
    out, err = capfd.readouterr()
    msg = str(info.value)
    assert "***" in msg and "invalid credentials" in msg
    for text in (msg, engine.status("gemma-3-1b")[1], caplog.text, out, err):
        assert secret not in text


@pytest.mark.app  # starts its own app.py, with a token
def test_an_app_with_a_token_never_shows_it(tmp_path):
    """app.py with HF_TOKEN set (so the gated 1B is the default) but offline: the 1B fails
    with a reason that lacks the token, the bundled 270M still works, and neither the API
    nor the log ever carries the token."""
    from gradio_client import Client

    token = f"hf_attnAppSecret{uuid.uuid4().hex}"
    server = app_server.launch(tmp_path, env={"HF_TOKEN": token, "ATTN_PREFETCH": "0"})
    try:
        server.wait_http(timeout=app_server.HTTP_TIMEOUT_S)
        deadline = time.monotonic() + 120
        while server.stats()["models"]["gemma-3-1b"] not in ("error", "ready"):
            assert time.monotonic() < deadline and server.alive(), server.log_tail()
            time.sleep(0.3)
        stats = server.stats()
        assert stats["models"]["gemma-3-1b"] == "error"  # offline: cannot fetch the gated model
        client = Client(server.url, verbose=False)
        with pytest.raises(Exception) as info:
            client.predict("Hello", "gemma-3-1b", api_name="/analyze")
        reason = str(info.value)
        assert "could not be loaded from google/gemma-3-1b-pt" in reason
        result = client.predict(THIRSTY, BUNDLED, api_name="/analyze")
        assert result["next_token"] == " water"
        page = urllib.request.urlopen(server.url, timeout=30).read().decode("utf-8", "replace")
        config = urllib.request.urlopen(server.url + "config", timeout=30).read().decode("utf-8", "replace")
        for text in (json.dumps(stats), reason, json.dumps(result), page, config):
            assert token not in text
    finally:
        server.stop()
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "gemma-3-1b" in log  # the failure was logged ...
    assert token not in log  # ... without the token


# ---- the server: not shared, bounded queue, no file access -----------------------------------


def _app_calls(attr: str) -> list[ast.Call]:
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == attr]


def test_the_app_is_never_shared_publicly():
    launches = _app_calls("launch")
    assert len(launches) == 1
    share = [kw for kw in launches[0].keywords if kw.arg == "share"]
    assert len(share) == 1 and isinstance(share[0].value, ast.Constant) and share[0].value.value is False
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\bshare\s*=\s*(True|1\b|os\.)", source), path
        assert_keyword_only_false(source, "share", path)


# app.py's main() with no server, no model load and no thread kept: its Blocks and queue.
QUEUE_PROBE = """
import json, os
import gradio as gr
import app
from attn.compute.engine import Engine

launched = []
gr.Blocks.launch = lambda self, *args, **kwargs: launched.append(self)
gr.Blocks.block_thread = lambda self: None
Engine.preload = lambda self, *args, **kwargs: None
out = {}
for size in (None, "5"):
    if size:
        os.environ["ATTN_QUEUE_SIZE"] = size
    app.main()
    demo = launched[-1]
    out[size or "default"] = {
        "max_size": demo._queue.max_size,
        "default_concurrency_limit": demo._queue.default_concurrency_limit,
        "api": {fn.api_name: [fn.concurrency_limit, fn.queue] for fn in demo.fns.values()
                if fn.api_visibility == "public"},
    }
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_request_queue_is_bounded():
    """The app as started (`python app.py`) queues a bounded number of requests, ATTN_QUEUE_SIZE
    sets the bound, and every API route is queued with a concurrency limit or skips the queue."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATTN_QUEUE_SIZE", "SPACES_ZERO_GPU", "HF_TOKEN")}
    proc = subprocess.run([sys.executable, "-c", QUEUE_PROBE], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(got["default"]["max_size"], int) and 1 <= got["default"]["max_size"] <= 1000
    assert got["5"]["max_size"] == 5
    for run in got.values():
        assert isinstance(run["default_concurrency_limit"], int) and run["default_concurrency_limit"] >= 1
        assert {"analyze", "view", "stats"} <= set(run["api"])
        for name, (limit, queued) in run["api"].items():
            assert (isinstance(limit, int) and limit >= 1) or queued is False, (name, limit, queued)


@pytest.mark.parametrize("path", [
    "gradio_api/file=/etc/passwd", "gradio_api/file=../../../../etc/passwd", "gradio_api/file=app.py",
    "gradio_api/file=README.md", "gradio_api/file=attn/models.py", "gradio_api/file=%2Fetc%2Fpasswd",
    "gradio_api/file=..%2F..%2F..%2Fetc%2Fpasswd", "file=/etc/passwd", "gradio_api/file=/proc/self/environ",
])
def test_the_server_serves_no_files_from_disk(app, path):
    try:
        with urllib.request.urlopen(app.url + path, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    assert status in (403, 404), (status, body[:200])
    assert b"root:" not in body and b"import " not in body and b"HF_TOKEN" not in body


def test_a_model_name_from_a_request_never_reaches_the_disk(app):
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    for name in ("/etc", "../../../tmp", str(ROOT), "google/gemma-3-1b-pt"):
        with pytest.raises(Exception) as info:
            client.predict("Hello", name, api_name="/analyze")
        assert str(info.value).startswith("Unknown model")
    assert set(app.stats()["models"]) == set(REGISTRY)
