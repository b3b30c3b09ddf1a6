"""The accelerator every model call goes through: spaces.GPU, a no-op off ZeroGPU, where it
runs the call in a forked worker that holds a GPU for at most `settings.gpu_seconds`."""

from __future__ import annotations

from collections.abc import Callable

import spaces

from attn.settings import Settings


def accelerator(settings: Settings) -> Callable[[Callable], Callable]:
    # 10 s by default: the worst call measured by bench/gpu.py (Gemma 3 1B shapes, bf16, 2048
    # tokens, weights copied in) took 0.7 s on an H200; a short duration queues sooner on ZeroGPU.
    return spaces.GPU(duration=settings.gpu_seconds)
