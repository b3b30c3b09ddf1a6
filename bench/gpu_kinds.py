"""A cold and a warm call of each kind, as a ZeroGPU worker runs it (bench/gpu.py calls this).

A GPU call is one job of attn/compute/jobs.py on the loaded model. Warm: the worker is kept
from an earlier call. Cold: a fresh worker pays CUDA's start in a new process (timed in a
subprocess), the weights copied in from the host, and the call's own first run. Each row says
the call's Work and what attn/compute/duration.py asks for it, so the request can be read
against the cold time; `suggest` derives the duration's constants from the rows.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

CUDA_START = ("import time, torch; t = time.perf_counter(); torch.zeros(1, device='cuda'); "
              "torch.cuda.synchronize(); print(time.perf_counter() - t)")


def cuda_start_s() -> float:
    """CUDA's start in a fresh process (0 without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return 0.0
    out = subprocess.run([sys.executable, "-c", CUDA_START], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def calls(loaded, long_prompt: str, other_prompt: str, steps: int) -> dict[str, tuple]:
    """Each kind's arguments, as the engine sends them, at the sizes that cost most."""
    from attn.compute import ablation, forward
    from attn.compute.encode import encode
    from attn.compute.generation import Continuation

    encoded = encode(loaded.tokenizer, long_prompt, 10**6)
    other = encode(loaded.tokenizer, other_prompt, 10**6)
    analysis = forward.forward(loaded, long_prompt, encoded)
    ids = analysis.token_ids.tolist()
    return {
        "forward": (long_prompt, encoded),
        "ablation": (ids, ablation.positions_to_delete(analysis), analysis.next_token_id),
        "generate": (long_prompt, encoded, Continuation(steps)),
        "compare": ((long_prompt, encoded), (other_prompt, other)),
    }


def measure(loaded, long_prompt: str, other_prompt: str, steps: int, repeats: int, sync) -> dict[str, dict]:
    import torch

    from attn.compute.duration import gpu_seconds
    from attn.compute.jobs import JOBS, work_of

    start = cuda_start_s()
    device = next(loaded.model.parameters()).device
    rows = {}
    for kind, args in calls(loaded, long_prompt, other_prompt, steps).items():
        run = JOBS[kind].run
        loaded.model.to("cpu")  # as ZeroGPU keeps weights between calls: on the host
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        sync()
        t = time.perf_counter()
        loaded.model.to(device)
        run(loaded, *args)
        sync()
        cold = start + time.perf_counter() - t
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(loaded, *args)
            sync()
            warm.append(time.perf_counter() - t)
        work = work_of(kind, *args)
        rows[kind] = {"tokens": work.tokens, "steps": work.steps, "cold_s": cold, "warm_s": statistics.median(warm),
                      "requested_s": gpu_seconds(work)}
    return {"cuda_start_s": start, "kinds": rows}


def suggest(measured: dict) -> dict[str, float]:
    """attn/compute/duration.py's constants from the rows: the cold term is the worst cold
    call less its warm time; the per-token term the most a warm call without steps took per
    token; the per-step term a continuation's time beyond a forward pass of its prompt, per step."""
    kinds = measured["kinds"]
    per_token = max(row["warm_s"] / max(row["tokens"], 1) for row in kinds.values() if not row["steps"])
    generate, forward = kinds["generate"], kinds["forward"]
    return {
        "COLD_S": max(row["cold_s"] - row["warm_s"] for row in kinds.values()),
        "TOKEN_S": per_token,
        "STEP_S": max(generate["warm_s"] - forward["warm_s"], 0.0) / max(generate["steps"], 1),
    }
