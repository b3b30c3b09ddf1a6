"""Run the real app (`python app.py`) as a subprocess on a free port: the benchmark's launcher,
which the tests' harness (tests/app_server.py) builds on. Not product code.

The child gets a free port on 127.0.0.1, the caller's ATTN_CACHE_DIR (default
~/.cache/attn-demo), no HF_TOKEN (so the default model is the bundled Gemma 3 270M),
the real model list (ATTN_MODELS / ATTN_DEFAULT_MODEL removed), and no analytics.
Its output goes to a log file whose tail is shown when start-up fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "gemma-3-270m"
# The first-ever start converts the bundled GGUF (seconds); a warm cache loads in a few seconds.
MODEL_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 120.0


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
    remove_log_dir: bool = False  # on stop: the log's folder goes too

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
            if self.remove_log_dir:
                shutil.rmtree(self.log_path.parent, ignore_errors=True)


def launch(log_dir: Path, cache_dir: str | None = None, env: dict[str, str] | None = None,
           code: str | None = None) -> AppServer:
    """Start `python app.py` on a free port, logging to `log_dir`; does not wait. `env`:
    variables set on top of child_env's; `code`: run `python -c code` instead (a variant of
    the app, e.g. with one of its constants changed, then app.main())."""
    port = free_port()
    log_path = log_dir / f"app-{port}.log"
    log_file = open(log_path, "w", encoding="utf-8")
    t0 = time.monotonic()
    command = [sys.executable, str(ROOT / "app.py")] if code is None else [sys.executable, "-c", code]
    proc = subprocess.Popen(
        command, cwd=str(ROOT), env={**child_env(port, cache_dir), **(env or {})},
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
    )
    return AppServer(port=port, proc=proc, log_path=log_path, _log_file=log_file, t0=t0)
