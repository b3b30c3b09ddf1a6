"""ZeroGPU as the tests and bench/classroom.py run it: spaces' own code, the platform faked.

`spaces` 0.51.3 is installed, and what the app meets on a ZeroGPU Space is its code:
`spaces.GPU` wraps a function in `zero/wrappers.py`'s `regular_function_wrapper`, which asks
`zero/client.py`'s `schedule` for a GPU (with the duration, the visitor's token and the
queue), forks a `Worker` and sends it the pickled arguments, keeps that worker while calls
succeed and forks a fresh one after an exception, and raises the gr.Errors the visitor sees.
All of that runs here unchanged. Faked are the two things that need the platform:

- the device API that `schedule`, `allow` and `release` call (`FakePlatform`): GPU slots,
  a queue with a timeout, each visitor's quota (refused with spaces' real messages, built by
  its own client from the platform's answers), a runs limit, credits pending, requests
  longer than allowed, the duration factor (1.5, the configs' non-H200 entry), a watchdog
  that aborts a call running past its duration, and a ledger of every request;
- `spaces.zero.torch` (it cannot even be imported on a CPU-only torch): the per-thread cuda
  emulation of bench/fake_cuda.py. In the thread that installs it (the main thread, as `import spaces` does on a
  Space), a move to cuda is emulated (weights stay on the CPU, which is the fake GPU); from
  any other thread it raises spaces' own "Low-level CUDA init" error, as on ZeroGPU.

`install(patch, platform)` puts it in place (`patch`: pytest's monkeypatch, or `Patches`,
which undoes its patches on `undo`); `uninstall` stops the workers. `platform.visitor(...)`
makes the calls of a block come from one visitor (each thread has its own).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from bench.fake_cuda import FakeZeroTorch

DURATION_FACTOR = 1.5  # spaces/zero/configs.json: the factor of the entry that is not the H200's
HANG_TIMEOUT_S = 300  # a call still running after this is aborted, so that a test fails instead of hanging


def _spaces_modules(fake_torch: FakeZeroTorch):
    """spaces' zero-GPU modules, imported with the fake torch module in place."""
    real = sys.modules.get("spaces.zero.torch")
    sys.modules["spaces.zero.torch"] = fake_torch
    try:
        from spaces.zero import api, client, config, wrappers
    finally:
        if real is not None:
            sys.modules["spaces.zero.torch"] = real
        else:
            sys.modules.pop("spaces.zero.torch", None)
    return api, client, config, wrappers


# ---- the platform (the device API) -------------------------------------------------------


@dataclass
class Request:
    """One `schedule` of the ledger."""

    visitor: str | None  # the token's user; None: no token (a call that did not come through the hub)
    seconds: int  # what was asked, after the platform's factor
    answer: str = "queued"  # "granted", "refused: <kind>", "queued", "timed out"
    slot: int | None = None
    allow_token: str | None = None
    failed: bool = False  # released as failed (an exception, or aborted)
    started: float = 0.0
    ended: float | None = None
    watchdog: threading.Timer | None = field(default=None, repr=False)


@dataclass
class FakePlatform:
    """ZeroGPU's device API, in process: `gpus` slots, a queue, quotas, a ledger."""

    gpus: int = 2
    queue_timeout_s: float = 60.0  # spaces' message says 60 s whatever this is
    reuse_workers: bool = True  # False: a fresh fork for every call
    max_duration_s: int = 120  # a longer request is refused ("illegal duration")
    quota: dict = field(default_factory=dict)  # visitor -> seconds left; absent: unlimited
    runs_limit: int | None = None  # granted calls per visitor
    abort_after_s: float | None = None  # None: a call may overrun its duration (up to HANG_TIMEOUT_S)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._cond = threading.Condition()
        self._slots: list[Request | None] = [None] * self.gpus
        self._held: set = set()
        self._timed_out: set = set()
        self._refuse_next: dict = {}
        self._allowed = multiprocessing.get_context("fork").SimpleQueue()  # (allow token, pid) from workers
        self._pids: dict[str, int] = {}
        self._workers: list = []
        self.fake_torch = FakeZeroTorch()

    # -- the test's levers --
    @contextlib.contextmanager
    def visitor(self, name: str | None, *, auth: str | None = "regular", api: bool = False):
        """Calls in this block (this thread) come from `name` (None: without a token), logged in
        at `auth` ("regular", "pro", or None: anonymous), through the page or the API."""
        from gradio.context import LocalContext

        headers = _Headers()
        if name is not None:
            payload = base64.urlsafe_b64encode(json.dumps({"user": name, "auth": auth}).encode()).decode().rstrip("=")
            headers["x-ip-token"] = f"header.{payload}.signature"
        if not api:
            headers["x-gradio-user"] = "app"
        reset = LocalContext.request.set(types.SimpleNamespace(headers=headers))
        try:
            yield
        finally:
            LocalContext.request.reset(reset)

    def hold(self, visitor: str | None) -> None:
        """Keep this visitor's requests in the queue (no GPU frees for them) until `let_go`."""
        with self._cond:
            self._held.add(visitor)

    def let_go(self, visitor: str | None) -> None:
        with self._cond:
            self._held.discard(visitor)
            self._cond.notify_all()

    def time_out(self, visitor: str | None) -> None:
        """The visitor's queued requests reach the queue's timeout now."""
        with self._cond:
            self._timed_out.add(visitor)
            self._cond.notify_all()

    def refuse_next(self, visitor: str | None, kind: str) -> None:
        """The visitor's next request is refused: "pending" (credits pending), "no_gpu" (503)."""
        with self._cond:
            self._refuse_next[visitor] = kind

    def queued(self, visitor: str | None) -> int:
        with self._cond:
            return sum(1 for r in self.requests if r.visitor == visitor and r.answer == "queued")

    # -- what the ledger says --
    def granted(self, visitor=...) -> list[Request]:
        return [r for r in self.requests if r.answer == "granted" and (visitor is ... or r.visitor == visitor)]

    def pid(self, request: Request) -> int | None:
        """The worker process that ran a granted request: the one forked for it, or the one
        its GPU slot kept from an earlier call (a worker is allowed once, when it starts)."""
        while not self._allowed.empty():
            token, pid = self._allowed.get()
            self._pids[token] = pid
        earlier = self.requests[:self.requests.index(request) + 1]
        ran = [self._pids[r.allow_token] for r in earlier if r.slot == request.slot and r.allow_token in self._pids]
        return ran[-1] if ran else None

    # -- the device API (spaces/zero/api.py's APIClient) --
    def schedule(self, cgroup_path, task_id=0, token=None, token_version=1, duration_seconds=None,
                 enable_queue=True, gpu_size=None):
        api = self._api
        visitor, auth = _who(token)
        meta = api.ScheduleMetadata(auth=auth, queuing_reason="node")
        seconds = int(duration_seconds or 60)
        with self._cond:
            request = Request(visitor, seconds, started=time.monotonic())
            self.requests.append(request)
            left = self.quota.get(visitor, math.inf)
            refused = self._refuse_next.pop(visitor, None)
            reserved = sum(r.seconds for r in self._slots if r is not None and r.visitor == visitor)
            if refused == "no_gpu":
                request.answer = "refused: no_gpu"
                return httpx.codes.SERVICE_UNAVAILABLE, meta
            wait = timedelta(hours=1)
            if seconds > self.max_duration_s:
                refused, wait = "illegal_duration", timedelta(seconds=-1)
            elif refused == "pending" or (seconds <= left < seconds + reserved):
                refused = "pending"
                meta = api.ScheduleMetadata(auth=auth, approve_result="pending-overquota-exceeded")
            elif seconds > left:
                refused = "quota"
            elif self.runs_limit is not None and len(self.granted(visitor)) >= self.runs_limit:
                refused, wait = "runs_limit", timedelta(0)
            if refused:
                request.answer = f"refused: {refused}"
                return api.QuotaInfos(left=int(min(left, 10**9)), wait=wait), meta
            if visitor not in self._held and (slot := self._free_slot()) is not None:
                return self._grant(request, slot), meta
        return self._queue(request), meta

    def allow(self, allow_token: str, pid: int):
        self._allowed.put((allow_token, pid))  # called in the worker: the pid crosses back
        return httpx.codes.OK

    def release(self, allow_token: str, fail: bool = False):
        with self._cond:
            for slot, request in enumerate(self._slots):
                if request is not None and request.allow_token == allow_token:
                    request.failed, request.ended = fail, time.monotonic()
                    request.watchdog.cancel()
                    used = max(1, math.ceil(request.ended - request.started))
                    if request.visitor in self.quota:
                        self.quota[request.visitor] -= used
                    self._slots[slot] = None
                    self._cond.notify_all()
                    return httpx.codes.OK
        return httpx.codes.NOT_FOUND

    # -- inside --
    def _free_slot(self) -> int | None:
        return next((i for i, r in enumerate(self._slots) if r is None), None)

    def _grant(self, request: Request, slot: int):
        request.answer, request.slot, request.allow_token = "granted", slot, uuid.uuid4().hex
        request.started = time.monotonic()
        self._slots[slot] = request
        limit = HANG_TIMEOUT_S if self.abort_after_s is None else self.abort_after_s
        request.watchdog = threading.Timer(limit, self._abort, (request,))
        request.watchdog.daemon = True
        request.watchdog.start()
        return self._api.ScheduleResponse(idle=self.reuse_workers, nvidiaIndex=slot, nvidiaUUID=_uuid(slot),
                                          allowToken=request.allow_token)

    def _queue(self, request: Request):
        """spaces' queue stream: pings while no GPU frees, then succeeded, or failed at the timeout."""
        QueueEvent = self._api.QueueEvent
        deadline = time.monotonic() + self.queue_timeout_s
        while True:
            with self._cond:
                slot = None if request.visitor in self._held else self._free_slot()
                if slot is not None:
                    event = QueueEvent(event="succeeded", data=self._grant(request, slot))
                elif time.monotonic() >= deadline or request.visitor in self._timed_out:
                    request.answer = "timed out"
                    event = QueueEvent(event="failed")
                else:
                    self._cond.wait(min(0.05, deadline - time.monotonic()))
                    event = QueueEvent(event="ping")
            yield event
            if event.event != "ping":
                return

    def _abort(self, request: Request) -> None:
        """The platform ends a call that ran past its time: its worker is killed."""
        with self._cond:
            running = request in self._slots
        if not running:
            return
        for worker in self._workers:
            if worker.nvidia_uuid == _uuid(request.slot) and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGKILL)

    def _close(self) -> None:
        for request in self.requests:
            if request.watchdog is not None:
                request.watchdog.cancel()
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(10)
        self._workers.clear()


class _Headers(dict):
    """Request headers as spaces reads them (a mapping with a __dict__)."""


def _who(token: str | None) -> tuple[str | None, str | None]:
    if token is None:
        return None, None
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return payload["user"], payload.get("auth")


def _uuid(slot: int) -> str:
    return f"GPU-fake-{slot}"


# ---- installing it -----------------------------------------------------------------------


class Patches:
    """monkeypatch's setattr and undo, for a script."""

    def __init__(self):
        self._undo: list = []

    def setattr(self, target, name: str, value) -> None:
        self._undo.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self) -> None:
        while self._undo:
            target, name, value = self._undo.pop()
            setattr(target, name, value)


def install(monkeypatch, platform: FakePlatform) -> FakePlatform:
    """spaces.GPU as on a ZeroGPU Space, against `platform` (`monkeypatch` undoes the patches;
    `uninstall` stops the platform's workers)."""
    import spaces

    api, client, config, wrappers = _spaces_modules(platform.fake_torch)
    platform._api = api
    monkeypatch.setattr(wrappers, "torch", platform.fake_torch)
    monkeypatch.setattr(client, "api_client", lambda: platform)
    monkeypatch.setattr(client.utils, "self_cgroup_device_path", lambda: "/fake-cgroup")
    entry = dict(config.get_config(), duration_factor=DURATION_FACTOR, xlarge_threshold=None)
    monkeypatch.setattr(config, "get_config", lambda: entry)

    class Worker(wrappers.Worker):
        def __init__(self, target, allow_token, nvidia_uuid):
            self.nvidia_uuid = nvidia_uuid
            super().__init__(target, allow_token, nvidia_uuid)
            platform._workers.append(self)

    monkeypatch.setattr(wrappers, "Worker", Worker)

    def gpu(task=None, *, duration=None, size=None):
        """spaces.GPU (zero/decorator.py) as when SPACES_ZERO_GPU is on."""
        if task is None:
            return lambda fn: gpu(fn, duration=duration, size=size)
        return wrappers.regular_function_wrapper(task, duration, size)

    monkeypatch.setattr(spaces, "GPU", gpu)
    platform.fake_torch.patch()  # in this thread, as `import spaces` does in the main thread
    return platform


def uninstall(platform: FakePlatform) -> None:
    platform.fake_torch.unpatch()
    platform._close()
