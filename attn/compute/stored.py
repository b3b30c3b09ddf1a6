"""The engine's side of the store: which answer is asked for, the key it is stored under, and
the one step "stored answer, else compute and store" (attn/compute/store.py is the disk).

A key needs the model's identity (attn/model/identity.py), known before the model loads,
so a stored answer is found without loading the model or importing torch; after a
computation the key is taken again, from the loaded model's own dtype and device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from attn.compute import ablation as ablation_mod
from attn.compute import generation as generation_mod
from attn.compute.ablation import Ablation
from attn.compute.analysis import Analysis
from attn.compute.compare import Comparison
from attn.compute.forward import FULL_MATRIX_MAX_TOKENS
from attn.compute.generation import Continuation, Generation
from attn.compute.store import SHIPPED, Store, StoreKey, StoreStats
from attn.model import identity
from attn.model.identity import ModelIdentity
from attn.model.loading import LoadedModel
from attn.settings import Settings

log = logging.getLogger(__name__)

# (model name, the loaded model or None) -> the identity records are keyed by, or None while
# it cannot be known (attn/model/identity.py identify).
Identify = Callable[[str, "LoadedModel | None"], "ModelIdentity | None"]

# What changes the numbers besides the token ids: part of every record's key.
ANALYSIS_OPTIONS = (("full_max_tokens", FULL_MATRIX_MAX_TOKENS), ("top_k", 10))  # forward.forward's top_k
ABLATION_OPTIONS = (("exhaustive_max_tokens", ablation_mod.EXHAUSTIVE_MAX_TOKENS),
                    ("most_attended", ablation_mod.MOST_ATTENDED))
ABSENT_MAX = 10_000  # peeks remembered as finding nothing, at most
TYPES = {"analysis": Analysis, "ablation": Ablation, "generation": Generation, "comparison": Comparison}


@dataclass(frozen=True)
class Asked:
    """One answer the engine may be asked for, as the store names it."""

    kind: str  # a key of TYPES
    model: str
    texts: tuple[str, ...]  # the prompt(s) as typed
    options: tuple[tuple[str, object], ...] = ()


def analysis(model: str, prompt: str) -> Asked:
    return Asked("analysis", model, (prompt,), ANALYSIS_OPTIONS)


def ablation(model: str, prompt: str) -> Asked:
    return Asked("ablation", model, (prompt,), ABLATION_OPTIONS)


def generation(model: str, prompt: str, continuation: Continuation) -> Asked:
    c = continuation
    return Asked("generation", model, (prompt,), (("max_new_tokens", c.max_new_tokens), ("seed", c.seed),
                                                  ("temperature", c.temperature), ("top_k", generation_mod.TOP_K)))


def comparison(model: str, prompt_a: str, prompt_b: str) -> Asked:
    return Asked("comparison", model, (prompt_a, prompt_b))


def ids_of(value) -> list:
    """The token ids (one row per prompt) an answer was computed from; an ablation carries its
    tokens, not their ids, so its caller gives them."""
    if isinstance(value, Comparison):
        return [value.a.token_ids, value.b.token_ids]
    if isinstance(value, Generation):
        return [value.steps[0].token_ids]
    return [value.token_ids]


class StoredAnswers:
    def __init__(self, store: Store | None, identify: Identify | None, max_tokens: int,
                 loaded: Callable[[str], LoadedModel | None]):
        self.store = store if identify is not None else None
        self._identify, self._max_tokens, self._loaded = identify, max_tokens, loaded
        # Peeks that found nothing (the views ask for a prompt's ablation on every redraw): not
        # asked of the disk again, which may be a network volume, until this process stores it.
        self._absent: set[StoreKey] = set()

    def key(self, asked: Asked) -> StoreKey | None:
        """The key `asked` is stored under; None without a store, or while the model's identity
        cannot be known (never an error: the store must not break an answer)."""
        if self.store is None:
            return None
        try:
            ident = self._identify(asked.model, self._loaded(asked.model))
        except Exception:
            log.exception("The analysis store cannot identify %s: answers are computed", asked.model)
            return None
        return None if ident is None else StoreKey(asked.kind, ident, asked.texts, asked.options)

    def get(self, asked: Asked, *, misses: bool = True):
        """The stored answer, or None (also when it is longer than this engine's token limit:
        computing it then refuses it with the usual message). `misses`: a lookup the answer is
        computed after, counted as a miss; without it, a peek (remembered when it finds nothing)."""
        key = self.key(asked)
        if key is None or (not misses and key in self._absent):
            return None
        found = self.store.get(key, TYPES[asked.kind], misses=misses)
        if found is None and not misses:
            if len(self._absent) >= ABSENT_MAX:
                self._absent.clear()
            self._absent.add(key)
        if found is not None and not isinstance(found, Ablation):
            if any(len(ids) > self._max_tokens for ids in ids_of(found)):
                return None
        return found

    def keep(self, asked: Asked, compute: Callable, ids: Callable | None = None):
        """The stored answer, else `compute()`'s, stored (`ids(value)`: its token ids, default
        ids_of) under the key of the model as it ran."""
        found = self.get(asked)
        if found is not None:
            return found
        return self.remember(asked, compute(), ids)

    def remember(self, asked: Asked, value, ids: Callable | None = None):
        """Store `value`, the answer to `asked`, under the key of the model as it ran; returns it."""
        key = self.key(asked)
        if key is not None:
            self.store.put(key, (ids or ids_of)(value), value)
            self._absent.discard(key)
        return value

    def cached(self, cache, key, asked: Asked):
        """The answer the engine's `cache` holds under `key`, else a peek at the store, whose
        answer then goes into the cache; None when neither has it (no model call)."""
        found = cache.get(key)
        if found is None and (found := self.get(asked, misses=False)) is not None:
            cache.put(key, found)
        return found

    def stats(self) -> StoreStats | None:
        return None if self.store is None else self.store.stats()


def for_settings(settings: Settings, shipped: bool = True) -> tuple[Store | None, Identify]:
    """The app's store (settings.store_dir, then attn/shipped/ unless not `shipped`) and how
    it identifies the registry's models (attn/model/identity.py)."""
    store = None if settings.store_dir is None else Store(settings.store_dir, settings.store_bytes,
                                                          [SHIPPED] if shipped else [])
    return store, lambda name, loaded: identity.identify(name, settings, loaded)
