"""The model calls the engine makes, one kind each: what a call runs on the loaded model, what
its failure says, which of the engine's counters counts it, and how much work it is.

The work (`Work`: tokens through the model, decode steps) is what a GPU call's requested
duration is estimated from (attn/compute/duration.py); a call on ZeroGPU carries it as its
first argument after the model's name, so the duration callable reads it without knowing
each kind's arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from attn.compute import ablation, compare, forward, generation
from attn.errors import GpuFaultError


@dataclass(frozen=True)
class Work:
    """How much one model call does."""

    kind: str  # a JOBS key
    tokens: int  # positions through the model in all: every row of every batch
    steps: int = 0  # decode steps after the prefill (a continuation)


@dataclass(frozen=True)
class Job:
    """One kind of model call."""

    run: Callable  # (LoadedModel, *args) -> a picklable value
    failure: str  # what its failure says, before "(ErrorClass); nothing was cached"
    counter: str | None  # the engine's counter of it; None: counted by its caller
    size: Callable  # (*args) -> (tokens, steps)


def _pair_tokens(side_a, side_b) -> int:
    """The tokens a comparison call analyses: the sides not known yet."""
    return sum(len(side[1][0]) for side in (side_a, side_b) if isinstance(side, tuple))


# Looked up when called (not bound here), so a test may replace a module's function.
JOBS = {
    "forward": Job(lambda loaded, *args: forward.forward(loaded, *args), "The model failed on this prompt",
                   "forward_calls", lambda prompt, encoded: (len(encoded[0]), 0)),
    # Every deletion given, its batches looped inside: sized to the device's memory.
    "ablation": Job(lambda loaded, ids, positions, next_id: ablation.p_next_without(
                        loaded, ids, positions, next_id, batch_tokens=ablation.device_batch_tokens(loaded, len(ids))),
                    "The model failed while deleting tokens", None,  # an ablation counts once, not per call
                    lambda ids, positions, next_id: (len(positions) * (len(ids) - 1), 0)),
    "generate": Job(lambda loaded, *args: generation.decode(loaded, *args), "The model failed while generating",
                    "generate_calls", lambda prompt, encoded, continuation: (len(encoded[0]),
                                                                             continuation.max_new_tokens)),
    "unembed": Job(lambda loaded, *args: compare.unembed_probs(loaded, *args), "The model failed while comparing",
                   "unembed_calls", lambda hidden, token_ids: (len(token_ids), 0)),
    # Both analyses a comparison lacks and its cross probabilities: one call (one GPU request).
    "compare": Job(lambda loaded, *args: compare.analyze_pair(loaded, *args), "The model failed while comparing",
                   None, lambda side_a, side_b: (_pair_tokens(side_a, side_b), 0)),
}


def work_of(job: str, *args) -> Work:
    tokens, steps = JOBS[job].size(*args)
    return Work(job, int(tokens), int(steps))


# A CUDA failure leaves the device in a state no later call should trust: out of memory, a
# device-side assert, an illegal address, a cuBLAS or cuDNN error.
_DEVICE_FAULT = re.compile(r"\bCUDA\b|CUBLAS|CUDNN|cuDNN|device-side assert|illegal memory access", re.I)


def device_fault(exc: BaseException, failure: str) -> GpuFaultError | None:
    """The error a CUDA failure becomes (raised, so that the worker is replaced), or None."""
    name = type(exc).__name__
    if name not in ("OutOfMemoryError", "AcceleratorError") and not _DEVICE_FAULT.search(str(exc)):
        return None
    what = "out of memory" if name == "OutOfMemoryError" or "out of memory" in str(exc) else name
    return GpuFaultError(f"{failure} (the GPU failed: {what}); nothing was cached. Try again: the next try "
                         "starts on a fresh GPU worker.")
