"""How many seconds a GPU call asks ZeroGPU for (`@spaces.GPU(duration=...)`), from its work.

The request matters more than the use. ZeroGPU schedules a call only while the visitor's
quota left covers the request (times the platform's own factor), queues a shorter request
sooner, and may abort a call that runs past it. So each call asks for an estimate of its
own: a cold-start term (a fresh worker forks, starts CUDA and copies in every packed weight),
a term per call, per token through the model and per decode step; times MARGIN; at most CAP_S.

The constants are conservative, not measured: no GPU has been lent to time a cold call of
each kind. `python bench/gpu.py` on a GPU measures a cold and a warm call of each kind in
bfloat16; bench/README.md (GPU sizing) has the figures and how the constants follow from them.
"""

from __future__ import annotations

import math

from attn.compute.jobs import Work

COLD_S = 6.0  # fork, CUDA start, the packed weights copied in, the first kernels' start-up
CALL_S = 0.5  # per call, warm: the launch-bound passes, hooks, integrity checks, copies to numpy
TOKEN_S = 2e-4  # per token through the model (a deletion row counts all its tokens)
STEP_S = 0.1  # per decode step of a continuation
MARGIN = 1.5
CAP_S = 60  # never more: spaces' own default request, and a bound on what one click costs


def gpu_seconds(work: Work) -> int:
    """Whole seconds (spaces truncates a fraction): at least MARGIN times the estimate, at most CAP_S."""
    estimate = COLD_S + CALL_S + TOKEN_S * work.tokens + STEP_S * work.steps
    return min(CAP_S, math.ceil(MARGIN * estimate))
