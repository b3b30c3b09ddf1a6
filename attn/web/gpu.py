"""The accelerator of the GPU models' calls on ZeroGPU: spaces.GPU, with a duration sized to
each call, and the platform's refusals turned into errors that stay with their visitor.

spaces (0.51.3: zero/wrappers.py, zero/client.py) schedules each call with the platform
(which may queue it up to 60 s, or refuse it against the visitor's quota), runs it in a
forked worker that it keeps while calls succeed, and raises gr.Error for a refusal, an
aborted task, or an exception of our function (then only its class name survives, unless
it is a gr.Error). Here:

- the duration is a callable, called by spaces with the function's arguments: the engine
  passes the call's Work, and attn/compute/duration.py sizes the request from it;
- a gr.Error from spaces becomes a GpuRefusedError with the platform's own message and a
  kind for /stats; the engine neither caches it nor hands it to another request;
- a CUDA failure in the worker (GpuFaultError) crosses as a WorkerFault, a gr.Error, so that
  its message survives and spaces drops the worker; here it is a GpuFaultError again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import gradio as gr
import spaces

from attn.compute.duration import gpu_seconds
from attn.errors import GpuFaultError, GpuRefusedError
from attn.settings import Settings

log = logging.getLogger(__name__)

SIGN_IN_URL = "https://huggingface.co/login"


class WorkerFault(gr.Error):
    """A GpuFaultError on its way out of a worker: a gr.Error, so spaces keeps its message
    (and, as for any exception, replaces the worker)."""


def accelerator(settings: Settings | None = None) -> Callable[[Callable], Callable]:
    """The engine's accelerator: `fn(job, model_name, work, *args)` through spaces.GPU."""

    def accelerate(fn: Callable) -> Callable:
        on_gpu = spaces.GPU(_faults_as_gradio_errors(fn), duration=requested_seconds)

        @functools.wraps(fn)
        def call(*args):
            try:
                return on_gpu(*args)
            except WorkerFault as exc:
                raise GpuFaultError(message_of(exc)) from None
            except gr.Error as exc:
                raise refusal(exc) from None
            except Exception as exc:  # the queue's stream, the device API, a visitor gone while queued
                log.exception("ZeroGPU call failed")
                raise GpuRefusedError(f"The GPU platform did not run this ({type(exc).__name__}). Try again.",
                                      "platform") from None
        return call

    return accelerate


def requested_seconds(job: str, model_name: str, work, *args) -> int:
    """The duration callable: spaces calls it with the decorated function's arguments."""
    return gpu_seconds(work)


def _faults_as_gradio_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def in_worker(*args):
        try:
            return fn(*args)
        except GpuFaultError as exc:
            raise WorkerFault(str(exc), title="GPU failed") from None
    return in_worker


def message_of(exc: gr.Error) -> str:
    """A gr.Error's message as text: str() of a gr.Error is its repr, and spaces' HTML
    messages carry a text version (their str())."""
    return str(getattr(exc, "message", "") or (exc.args[0] if exc.args else "")) or type(exc).__name__


def refusal(exc: gr.Error) -> GpuRefusedError:
    """The platform's refusal as this demo's error, with its kind (spaces/zero/client.py's
    titles and messages)."""
    title, message = str(getattr(exc, "title", "") or ""), message_of(exc)
    if message.startswith("No GPU was available"):
        kind = "no_gpu"  # none free now (503), or none after 60 s in the queue
    elif "pending credits" in title:
        kind = "pending_credits"
    elif "illegal duration" in title:
        kind = "illegal_duration"
    elif "runs limit" in message:
        kind = "runs_limit"
    elif "quota exceeded" in title:
        kind = "quota"  # the visitor's, or the Space's own GPU limit
    elif message == "GPU task aborted":
        kind = "aborted"
    elif title == "ZeroGPU worker error":
        kind = "worker_error"
    else:
        kind = "other"
    return GpuRefusedError(message, kind)
