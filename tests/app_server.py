"""The real app as the tests run it: `python app.py` in a subprocess (bench/launch.py starts it).

The `app` fixture in tests/conftest.py uses `shared_app()`, which hands every caller the
same running server; the last `release()` stops it, and an atexit hook stops it at the
latest when the interpreter exits. A server's log file is removed when it stops, unless
ATTN_TEST_KEEP_LOGS=1 or its start failed. ATTN_TEST_MODEL_TIMEOUT and
ATTN_TEST_HTTP_TIMEOUT (seconds) bound the waits for the model and for the page.

`ApiClient` is gradio_client's Client as the API tests should use it: it asks again for a
call that gradio_client 2.7.2 drops (see its docstring), and no failure it raises has an
empty message.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import tempfile
import threading
from pathlib import Path

from bench.launch import BUNDLED, AppServer, child_env, free_port
from bench.launch import launch as launch_app

__all__ = ["BUNDLED", "AppServer", "ApiClient", "CallFailed", "child_env", "describe", "free_port", "launch",
           "release", "shared_app", "start_app"]

MODEL_TIMEOUT_S = float(os.environ.get("ATTN_TEST_MODEL_TIMEOUT", "600"))
HTTP_TIMEOUT_S = float(os.environ.get("ATTN_TEST_HTTP_TIMEOUT", "120"))
KEEP_LOGS = bool(os.environ.get("ATTN_TEST_KEEP_LOGS"))


def launch(log_dir: Path, cache_dir: str | None = None, env: dict[str, str] | None = None) -> AppServer:
    """bench/launch.py's launch, with an analysis store of the server's own in `log_dir`: what
    one test server stores, no other test and no later run sees (the presets' shipped
    records still answer, as on a fresh Space)."""
    return launch_app(log_dir, cache_dir, {"ATTN_STORE_DIR": str(Path(log_dir) / "store"), **(env or {})})


def start_app(attempts: int = 3) -> AppServer:
    """Start app.py on a free port and wait until it serves HTTP and the bundled model is loaded."""
    log_dir = Path(tempfile.mkdtemp(prefix="attn-app-test-"))
    last: Exception | None = None
    for attempt in range(attempts):
        server = launch(log_dir)
        server.remove_log_dir = not KEEP_LOGS
        try:
            server.wait_http(timeout=HTTP_TIMEOUT_S)
            server.wait_model(timeout=MODEL_TIMEOUT_S)
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
