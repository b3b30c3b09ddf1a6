"""The public API (gr.api): /analyze, /view, /ablate, /compare, /generate and /stats.

Their names, parameters and JSON are a contract (docs/api.md); each method's signature and
docstring are what Gradio publishes for its endpoint.
"""

from __future__ import annotations

import gradio as gr

from attn.compute.engine import Engine
from attn.errors import AttnError
from attn.model.registry import BUNDLED
from attn.settings import Settings
from attn.views.view import View, parse_head, view_json


def answer(job):
    """An API call: AttnErrors become readable gr.Errors."""
    try:
        return job()
    except AttnError as exc:
        raise gr.Error(str(exc)) from None


class Api:
    def __init__(self, engine: Engine, settings: Settings):
        self.engine, self.settings = engine, settings

    def register(self) -> None:
        """The endpoints, inside the open gr.Blocks, each with its concurrency limit."""
        gr.api(self.analyze, api_name="analyze", concurrency_limit=2)
        gr.api(self.view, api_name="view", concurrency_limit=4)
        gr.api(self.ablate, api_name="ablate", concurrency_limit=1)
        gr.api(self.compare, api_name="compare", concurrency_limit=2)
        gr.api(self.generate, api_name="generate", concurrency_limit=1)
        gr.api(self.stats, api_name="stats", queue=False)

    def analyze(self, prompt: str, model: str = BUNDLED) -> dict:
        """Analyze a prompt: next token, top-k, and the last position's attention for every
        layer and head (the JSON schema in docs/api.md)."""
        return answer(lambda: self.engine.analyze(prompt, model).to_json())

    def view(self, prompt: str, model: str = BUNDLED, layer: int = 0, head: str = "mean", bos: str = "gray",
             measure: str = "raw") -> dict:
        """The weights one view shows (served from the cache when the prompt was analyzed)."""
        return answer(lambda: view_json(self.engine.analyze(prompt, model),
                                        View(layer=layer, head=parse_head(head), bos=bos, measure=measure)))

    def ablate(self, prompt: str, model: str = BUNDLED) -> dict:
        """Delete each prompt token in turn: the next token's probability without it (README)."""
        return answer(lambda: self.engine.ablate(prompt, model).to_json())

    def compare(self, prompt_a: str, prompt_b: str, model: str = BUNDLED) -> dict:
        """Two prompts' analyses, their tokens aligned, and each one's probability of the
        other's next token (README)."""
        return answer(lambda: self.engine.compare(prompt_a, prompt_b, model).to_json())

    def generate(self, prompt: str, model: str = BUNDLED, max_new_tokens: int = 8, temperature: float = 0.0,
                 seed: int = 0) -> dict:
        """Continue a prompt (greedy at temperature 0) with every step's attention (README)."""
        return answer(lambda: self.engine.generate(prompt, model, max_new_tokens, temperature, seed).to_json())

    def stats(self) -> dict:
        """Counters for monitoring (and for tests): forward passes run, model calls on the CPU
        and on ZeroGPU (with the seconds they asked for, and the platform's refusals by kind),
        cache use."""
        engine, s = self.engine, self.engine.cache_stats()
        return {
            "forward_calls": engine.forward_calls,
            "ablation_calls": engine.ablation_calls,
            "generate_calls": engine.generate_calls,
            "cpu_calls": engine.cpu_calls,
            "gpu_calls": engine.gpu_calls,
            "gpu_seconds_requested": engine.gpu_seconds_requested,
            "refusals": dict(engine.refusals),
            "cache": {"hits": s.hits, "misses": s.misses, "entries": s.entries, "bytes": s.bytes,
                      "max_bytes": s.max_bytes},
            "models": {n: engine.status(n)[0] for n in self.settings.models},
        }
