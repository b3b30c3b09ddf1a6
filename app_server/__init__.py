"""Run the real Gradio app (app.py) as a subprocess: the launcher the tests and the bench share.

The `app` fixture in tests/conftest.py uses `shared_app()`, which hands every caller the
same running server; the last `release()` stops it, and an atexit hook stops it at the
latest when the interpreter exits. bench/start.py uses `launch()` to time start-ups.

The child gets a free port on 127.0.0.1, the caller's ATTN_CACHE_DIR (default
~/.cache/attn-demo), no HF_TOKEN (so the default model is the bundled Gemma 3 270M),
the real model list (ATTN_MODELS / ATTN_DEFAULT_MODEL removed), and no analytics.
Its output goes to a log file whose tail is shown when start-up fails (the file is
removed when the server stops, unless ATTN_TEST_KEEP_LOGS=1).

`ApiClient` is gradio_client's Client as the API tests should use it: it asks again for a
call that gradio_client 2.7.2 drops (see its docstring), and no failure it raises has an
empty message.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "gemma-3-270m"
# The first-ever start converts the bundled GGUF (seconds); a warm cache loads in a few seconds.
MODEL_TIMEOUT_S = float(os.environ.get("ATTN_TEST_MODEL_TIMEOUT", "600"))
HTTP_TIMEOUT_S = float(os.environ.get("ATTN_TEST_HTTP_TIMEOUT", "120"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(port: int, cache_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ATTN_MODELS", "ATTN_DEFAULT_MODEL",
                 "SPACES_ZERO_GPU", "GRADIO_ROOT_PATH"):
        env.pop(name, None)
    if cache_dir is not None:
        env["ATTN_CACHE_DIR"] = cache_dir
    env.setdefault("ATTN_CACHE_DIR", str(Path("~/.cache/attn-demo").expanduser()))
    env.update(
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class AppServer:
    port: int
    proc: subprocess.Popen
    log_path: Path
    _log_file: object = field(repr=False, default=None)
    t0: float = field(default_factory=time.monotonic)  # just before Popen
    remove_log_dir: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def since_start(self) -> float:
        return time.monotonic() - self.t0

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _fail(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what}\n--- app log (tail) ---\n{self.log_tail()}")

    def wait_http(self, timeout: float = HTTP_TIMEOUT_S, poll: float = 0.25) -> float:
        """Seconds from start until GET / answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self._fail(f"app.py exited early with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self.since_start()
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(poll)
        raise self._fail(f"app.py did not answer on {self.url} within {timeout:.0f} s")

    def stats(self) -> dict:
        """/stats through the plain HTTP API (the same route gradio_client uses)."""
        req = urllib.request.Request(
            self.url + "gradio_api/call/stats", data=b'{"data": []}',
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            event_id = json.loads(r.read())["event_id"]
        with urllib.request.urlopen(self.url + f"gradio_api/call/stats/{event_id}", timeout=30) as r:
            body = r.read().decode("utf-8")
        event = None
        for line in body.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "complete":
                return json.loads(line.split(":", 1)[1])[0]
        raise RuntimeError(f"/stats gave no result: {body[:500]!r}")

    def wait_model(self, name: str = BUNDLED, timeout: float = MODEL_TIMEOUT_S, poll: float = 0.5) -> float:
        """Seconds from start until the background load is done (fails on a load error)."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            if not self.alive():
                raise self._fail(f"app.py exited with code {self.proc.returncode} while loading {name}")
            state = self.stats()["models"].get(name, "missing")
            if state == "ready":
                return self.since_start()
            if state in ("error", "missing"):
                raise self._fail(f"model {name} is {state!r} in the app")
            time.sleep(poll)
        raise self._fail(f"model {name} still {state!r} after {timeout:.0f} s")

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
            if self.remove_log_dir and not os.environ.get("ATTN_TEST_KEEP_LOGS"):
                shutil.rmtree(self.log_path.parent, ignore_errors=True)


def launch(log_dir: Path, cache_dir: str | None = None) -> AppServer:
    """Start `python app.py` on a free port, logging to `log_dir`; does not wait."""
    port = free_port()
    log_path = log_dir / f"app-{port}.log"
    log_file = open(log_path, "w", encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")], cwd=str(ROOT), env=child_env(port, cache_dir),
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
    )
    return AppServer(port=port, proc=proc, log_path=log_path, _log_file=log_file, t0=t0)


def start_app(attempts: int = 3) -> AppServer:
    """Start app.py on a free port and wait until it serves HTTP and the bundled model is loaded."""
    log_dir = Path(tempfile.mkdtemp(prefix="attn-app-test-"))
    last: Exception | None = None
    for attempt in range(attempts):
        server = launch(log_dir)
        server.remove_log_dir = True
        try:
            server.wait_http()
            server.wait_model()
            return server
        except Exception as exc:
            lost_port_race = "address already in use" in server.log_tail().lower()
            server.remove_log_dir = False  # keep the log of a failed start
            server.stop()
            last = exc
            if not lost_port_race:  # only a lost port race is worth another try
                raise
    raise RuntimeError(f"app.py did not start after {attempts} attempts") from last


class CallFailed(RuntimeError):
    """An API call that failed for good; its message says which call and why."""


def describe(exc: BaseException) -> str:
    """`Type: message`, never just `Type: ` (a bare CancelledError or timeout has no message)."""
    text = str(exc).strip()
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {text or repr(exc) + ' (no message)'}"


class ApiClient:
    """A gradio_client Client that asks again for a call gradio_client dropped.

    Why: gradio_client 2.7.2 reads a session's results on one SSE stream, which the server
    closes (`close_stream`) once the session has nothing pending. If the caller's next call
    is registered before the client's reader thread has read that `close_stream` (a reader
    starved of the GIL by other threads), the reader still closes, and the client ends the
    new call with a bare `concurrent.futures.CancelledError()`, message "". The server ran
    the call and logged nothing wrong. `predict()` cannot be cancelled by its caller, so a
    CancelledError from it is always this race; the endpoints are idempotent and cached, so
    asking again is safe and costs no second forward pass.
    """

    def __init__(self, url: str, attempts: int = 3, **kwargs):
        from gradio_client import Client

        self.client = Client(url, verbose=False, **kwargs)
        self.attempts = attempts
        self.dropped = 0  # calls gradio_client dropped and this asked again for

    def predict(self, *args, api_name: str):
        for attempt in range(1, self.attempts + 1):
            try:
                return self.client.predict(*args, api_name=api_name)
            except concurrent.futures.CancelledError as exc:
                if attempt == self.attempts:
                    raise CallFailed(
                        f"{api_name}{args!r}: gradio_client dropped the call {attempt} times (a bare "
                        "CancelledError: its result stream closed first, by the close_stream race "
                        "or because the server went away)") from exc
                self.dropped += 1
            except Exception as exc:
                if str(exc).strip():
                    raise
                raise CallFailed(f"{api_name}{args!r} failed: {describe(exc)}") from exc

    def close(self) -> None:
        self.client.close()


_lock = threading.Lock()
_server: AppServer | None = None
_users = 0


def _stop_shared() -> None:
    global _server, _users
    with _lock:
        if _server is not None:
            _server.stop()
        _server, _users = None, 0


atexit.register(_stop_shared)


def shared_app() -> AppServer:
    """The session's one server (started on first use); pair every call with release()."""
    global _server, _users
    with _lock:
        if _server is None or not _server.alive():
            if _server is not None:
                _server.stop()
            _server = start_app()
        _users += 1
        return _server


def release() -> None:
    global _server, _users
    with _lock:
        _users -= 1
        if _users <= 0 and _server is not None:
            _server.stop()
            _server, _users = None, 0
