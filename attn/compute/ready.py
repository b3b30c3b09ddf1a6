"""What the engine does before its model is ready: answers it has without the model (the
cache, then the analysis store: attn/compute/stored.py), and the model's background load,
started a moment after the server answers ("serve, then load": importing transformers holds
the GIL for seconds, and would slow the stored answers; bench/README.md).

A part of Engine (it is one of its bases): it uses the engine's cache, keys and loading.
"""

from __future__ import annotations

import threading

from attn.compute import stored
from attn.errors import AttnError


class BeforeTheModel:
    def preload(self, name: str, after: float = 0.0) -> threading.Thread:
        """Start loading in the background so the server can answer meanwhile; `after` seconds
        from now (status says 'loading' meanwhile; a request that needs the model, or a
        preload without a delay, starts it at once)."""

        def run():
            try:
                self.model(name)
            except Exception:  # remembered in the engine's errors; reported by status()
                pass
            finally:
                self._scheduled.pop(name, None)

        if after <= 0 and (pending := self._scheduled.pop(name, None)) is not None:
            pending.cancel()
        thread = threading.Timer(after, run) if after > 0 else threading.Thread(target=run)
        thread.name, thread.daemon = f"load-{name}", True
        if after > 0:
            self._scheduled[name] = thread
        thread.start()
        return thread

    def has_answer(self, prompt, model_name, *, compare="", max_new_tokens=1, temperature=0.0, seed=0) -> bool:
        """Whether analyze (with `compare`: compare; with a continuation: generate) answers
        without the model, from the cache or the store (what the store has goes into the cache)."""
        try:
            self._check_name(model_name)
            if compare:
                key, asked = ("compare", model_name, prompt, compare), stored.comparison(model_name, prompt, compare)
            elif int(max_new_tokens) > 1 or float(temperature) > 0:
                key, continuation = self._generation_key(prompt, model_name, max_new_tokens, temperature, seed)
                asked = stored.generation(model_name, prompt, continuation)
            else:
                key, asked = (model_name, prompt), stored.analysis(model_name, prompt)
        except (AttnError, TypeError, ValueError):
            return False
        return key in self.cache or self.stored.cached(self.cache, key, asked) is not None

    def cached_ablation(self, prompt: str, model_name: str):
        """The ablation if it is cached or stored (for views: never runs the model)."""
        return self.stored.cached(self.cache, ("ablation", model_name, prompt), stored.ablation(model_name, prompt))

    def _known(self, prompt: str, model_name: str):
        """The analysis if the cache or the store has it (no model call)."""
        return self.cached(prompt, model_name) if self.has_answer(prompt, model_name) else None
