"""The engine's front door: named models loaded once, analyses cached, errors kept.

The UI and the CLI talk to an Engine; they never touch a model. Loading is lazy and
happens once per model (a load failure is remembered with its reason, never retried on
every request, never silently swapped for another model).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from attn.compute import ablation, compare, forward, generation, stored
from attn.compute.ablation import Ablation
from attn.compute.analysis import Analysis
from attn.compute.cache import ByteLRU, CacheStats
from attn.compute.compare import Comparison
from attn.compute.encode import Encoded, check_prompt, encode
from attn.compute.generation import Generation
from attn.compute.store import SHIPPED, Store
from attn.compute.stored import Identify, StoredAnswers
from attn.errors import AnalysisFailedError, AttnError, ModelUnavailableError, UnknownModelError, echo
from attn.model import identity, loading
from attn.model.loading import LoadedModel
from attn.model.registry import get_spec
from attn.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[str, Callable[[str], None]], LoadedModel]
Accelerator = Callable[[Callable], Callable]  # e.g. spaces.GPU(duration=10)


@dataclass(frozen=True)
class Job:
    """One kind of model call: what it runs on the loaded model, what its failure says, and
    which of the engine's counters counts it (None: counted by its caller)."""

    run: Callable  # (LoadedModel, *args) -> a picklable value
    failure: str
    counter: str | None


# Looked up when called (not bound here), so a test may replace a module's function.
JOBS = {
    "forward": Job(lambda loaded, *args: forward.forward(loaded, *args),
                   "The model failed on this prompt", "forward_calls"),
    "ablation": Job(lambda loaded, *args: ablation.batch_p_next(loaded, *args),
                    "The model failed while deleting tokens", None),  # an ablation counts once, not per batch
    "generate": Job(lambda loaded, *args: generation.decode(loaded, *args),
                    "The model failed while generating", "generate_calls"),
    "unembed": Job(lambda loaded, *args: compare.unembed_probs(loaded, *args),
                   "The model failed while comparing", "unembed_calls"),
}


class Engine:
    def __init__(
        self,
        *,
        loader: Loader,
        model_names: list[str],
        cache_bytes: int = Settings.cache_bytes,
        max_tokens: int = Settings.max_tokens,
        accelerator: Accelerator | None = None,
        store: Store | None = None,
        identify: Identify | None = None,
    ):
        self.max_tokens = max_tokens
        # Analyses under (model, prompt), ablations under ("ablation", model, prompt),
        # generations under ("generation", model, prompt, n, temperature, seed), comparisons
        # under ("compare", model, prompt_a, prompt_b).
        self.cache: ByteLRU[Analysis | Ablation | Generation | Comparison] = ByteLRU(
            cache_bytes, size_of=lambda a: a.nbytes)
        self.model_names = list(model_names)
        self._loader = loader
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._progress: dict[str, str] = {}
        self._scheduled: dict[str, threading.Timer] = {}  # background loads that start a moment later
        self._load_locks = {name: threading.Lock() for name in self.model_names}
        self._run_locks = {name: threading.Lock() for name in self.model_names}
        # Behind the cache, answers kept on disk: found without the model (attn/compute/stored.py).
        self.stored = StoredAnswers(store, identify, max_tokens, self._models.get)
        self.forward_calls = 0
        self.ablation_calls = 0  # ablations computed (each is several batched forward passes)
        self.generate_calls = 0  # generations computed (each is one KV-cached loop)
        self.unembed_calls = 0  # cross probabilities read from stored hidden states (no forward pass)
        # On ZeroGPU the accelerator (spaces.GPU) runs every model call in a forked worker:
        # its arguments and result are pickled, and nothing it changes here comes back.
        # So it gets only what it needs and returns a value; all bookkeeping stays here.
        self._remote = (accelerator or (lambda fn: fn))(self._outcome)

    @classmethod
    def for_settings(cls, settings: Settings, accelerator: Accelerator | None = None, shipped: bool = True) -> "Engine":
        """The engine of the app and the CLI: the registry's models as `settings` offer and
        load them; answers stored in settings.store_dir, then (`shipped`) in attn/shipped/."""
        layers = [SHIPPED] if shipped else []
        store = None if settings.store_dir is None else Store(settings.store_dir, settings.store_bytes, layers)
        return cls(loader=lambda name, progress: loading.load(name, settings, progress),
                   model_names=list(settings.models), cache_bytes=settings.cache_bytes,
                   max_tokens=settings.max_tokens, accelerator=accelerator, store=store,
                   identify=lambda name, loaded: identity.identify(name, settings, loaded))

    # ---- models -------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if name not in self._load_locks:
            get_spec(name)  # raises UnknownModelError with the list of names
            raise UnknownModelError(f"Model {echo(name)} is not enabled in this demo.")

    def model(self, name: str) -> LoadedModel:
        """The loaded model, loading it on first use. Raises ModelUnavailableError."""
        self._check_name(name)
        if name in self._models:
            return self._models[name]
        with self._load_locks[name]:
            if name in self._models:
                return self._models[name]
            if name in self._errors:
                raise ModelUnavailableError(self._errors[name])
            try:
                loaded = self._loader(name, lambda msg: self._note_progress(name, msg))
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ModelUnavailableError) else (
                    f"Model {name!r} failed to load: {type(exc).__name__}: {exc}"
                )
                log.error("%s", reason)
                self._errors[name] = reason
                raise ModelUnavailableError(reason) from exc
            self._models[name] = loaded
            return loaded

    def _note_progress(self, name: str, message: str) -> None:
        self._progress[name] = message
        log.info("[%s] %s", name, message)

    def preload(self, name: str, after: float = 0.0) -> threading.Thread:
        """Start loading in the background so the server can answer meanwhile; `after` seconds
        from now (status says 'loading' meanwhile; a request that needs the model, or a
        preload without a delay, starts it at once)."""

        def run():
            try:
                self.model(name)
            except Exception:  # remembered in self._errors; reported by status()
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

    def status(self, name: str) -> tuple[str, str]:
        """(state, detail): state is 'ready', 'loading', 'error' or 'not loaded'."""
        self._check_name(name)
        if name in self._models:
            m = self._models[name]
            return "ready", f"{m.num_layers} layers, {m.num_heads} heads, {m.dtype} on {m.device}"
        if name in self._errors:
            return "error", self._errors[name]
        if self._load_locks[name].locked():
            return "loading", self._progress.get(name, "Loading")
        if name in self._scheduled:
            return "loading", "Starting"
        return "not loaded", ""

    def is_ready(self, name: str) -> bool:
        return name in self._models

    # ---- the one path of every model call -----------------------------------------
    def _call(self, job: str, model_name: str, *args):
        """Run `job` on the model: under its run lock (one call per model at a time: bounded
        memory, no thread thrash), counted here, through the accelerator; an error that
        comes back as a value is raised here."""
        counter = JOBS[job].counter
        with self._run_locks[model_name]:
            if counter is not None:
                setattr(self, counter, getattr(self, counter) + 1)
            outcome = self._remote(job, model_name, *args)
        if isinstance(outcome, AttnError):
            raise outcome
        return outcome

    def _outcome(self, job: str, model_name: str, *args):
        """The call itself, where the accelerator is. Errors come back as values: spaces
        would replace a raised one with a bare "ZeroGPU worker error"."""
        try:
            return JOBS[job].run(self.model(model_name), *args)
        except AttnError as exc:
            return exc
        except Exception as exc:
            log.exception("analysis failed on %s", model_name)
            failed = AnalysisFailedError(
                f"{JOBS[job].failure} ({type(exc).__name__}); nothing was cached. Try again, or try another prompt."
            )
            failed.__cause__ = exc  # kept in process; a pickle across processes drops it
            return failed

    def _encode(self, model_name: str, prompt: str) -> Encoded:
        """The prompt as the model reads it; bad input is refused here, before any model call."""
        return encode(self.model(model_name).tokenizer, prompt, self.max_tokens)

    # ---- analysis -----------------------------------------------------------------
    def analyze(self, prompt: str, model_name: str) -> Analysis:
        """Cached analysis. Raises PromptError, UnknownModelError, ModelUnavailableError."""
        self._check_name(model_name)
        check_prompt(prompt, self.max_tokens)  # before waiting on a model load or a forward pass
        return self.cache.get_or_compute((model_name, prompt), lambda: self.stored.keep(
            stored.analysis(model_name, prompt),
            lambda: self._call("forward", model_name, prompt, self._encode(model_name, prompt))))

    def cached(self, prompt: str, model_name: str) -> Analysis | None:
        return self.cache.get((model_name, prompt))

    # ---- ablation -----------------------------------------------------------------
    def ablate(
        self, prompt: str, model_name: str, progress: ablation.Progress | None = None
    ) -> Ablation:
        """Cached token ablation (attn/compute/ablation.py), computed from the cached analysis.

        Each batch of deletions takes the model's run lock on its own, so analyses of
        other prompts wait for at most one batch, and views (served from the caches)
        never wait. `progress(done, total)` is called as batches finish.
        """
        analysis = self.analyze(prompt, model_name)
        return self.cache.get_or_compute(("ablation", model_name, prompt), lambda: self.stored.keep(
            stored.ablation(model_name, prompt), lambda: self._ablate_uncached(analysis, model_name, progress),
            lambda _: [analysis.token_ids]))

    def cached_ablation(self, prompt: str, model_name: str) -> Ablation | None:
        """The ablation if it is cached or stored (for views: never runs the model)."""
        found = self.cache.get(("ablation", model_name, prompt))
        if found is None and (found := self.stored.get(stored.ablation(model_name, prompt), misses=False)):
            self.cache.put(("ablation", model_name, prompt), found)
        return found

    def _ablate_uncached(self, analysis: Analysis, model_name: str, progress) -> Ablation:
        loaded = self.model(model_name)
        ids, next_id = analysis.token_ids.tolist(), analysis.next_token_id
        self.ablation_calls += 1
        return ablation.ablate(loaded, analysis, progress=progress,
                               run=lambda chunk: self._call("ablation", model_name, ids, chunk, next_id))

    # ---- generation ---------------------------------------------------------------
    def generate(
        self, prompt: str, model_name: str, max_new_tokens: int = 1, temperature: float = 0.0, seed: int = 0
    ) -> Generation:
        """Cached continuation of `prompt` (attn/compute/generation.py): greedy at temperature 0,
        else sampled with `seed` (the same seed gives the same tokens). A bad continuation or a
        bad prompt is refused (ViewError, PromptError) before any model call."""
        key, continuation = self._generation_key(prompt, model_name, max_new_tokens, temperature, seed)
        check_prompt(prompt, self.max_tokens)
        return self.cache.get_or_compute(key, lambda: self.stored.keep(
            stored.generation(model_name, prompt, continuation),
            lambda: self._call("generate", model_name, prompt, self._encode(model_name, prompt), continuation)))

    def cached_generation(
        self, prompt: str, model_name: str, max_new_tokens: int = 1, temperature: float = 0.0, seed: int = 0
    ) -> Generation | None:
        """The generation if it is cached (for views: never runs the model). A continuation
        that `generate` would refuse raises the same ViewError."""
        return self.cache.get(self._generation_key(prompt, model_name, max_new_tokens, temperature, seed)[0])

    def _generation_key(self, prompt, model_name, max_new_tokens, temperature, seed):
        self._check_name(model_name)
        continuation = generation.check_continuation(max_new_tokens, temperature, seed)
        # Greedy continuations carry seed None: every seed shares one entry.
        key = ("generation", model_name, prompt, continuation.max_new_tokens, continuation.temperature,
               continuation.seed)
        return key, continuation

    # ---- comparison ---------------------------------------------------------------
    def compare(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        """Two prompts side by side (attn/compute/compare.py): both cached analyses, their tokens
        aligned, and the probability each gives to the other's next token. Costs the two
        analyses (none if cached) and at most one unembedding, never a third forward pass.
        An error about a prompt says which one ("Prompt B: ...")."""
        self._check_name(model_name)
        prompts = (("A", prompt_a), ("B", prompt_b))
        for label, prompt in prompts:  # both checked before any model load or call
            _labelled(label, lambda: check_prompt(prompt, self.max_tokens))
        key = ("compare", model_name, prompt_a, prompt_b)
        return self.cache.get_or_compute(key, lambda: self.stored.keep(
            stored.comparison(model_name, prompt_a, prompt_b),
            lambda: self._compare_uncached(prompt_a, prompt_b, model_name)))

    def cached_comparison(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison | None:
        return self.cache.get(("compare", model_name, prompt_a, prompt_b))

    def _compare_uncached(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        for label, prompt in (("A", prompt_a), ("B", prompt_b)):  # both refused before either runs
            _labelled(label, lambda: self._encode(model_name, prompt))
        a = _labelled("A", lambda: self.analyze(prompt_a, model_name))
        b = _labelled("B", lambda: self.analyze(prompt_b, model_name))
        return compare.compare(a, b, unembed=lambda hidden, token_ids: self._call(
            "unembed", model_name, hidden, token_ids))

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

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
        if key not in self.cache and (found := self.stored.get(asked, misses=False)) is not None:
            self.cache.put(key, found)
        return key in self.cache


def _labelled(label: str, job):
    """Run `job`; an error about its prompt comes back naming it ("Prompt B: ...").
    Errors about the model (unknown, unavailable) concern both prompts and stay as they are."""
    try:
        return job()
    except (UnknownModelError, ModelUnavailableError):
        raise
    except AttnError as exc:
        raise type(exc)(f"Prompt {label}: {exc}") from exc
