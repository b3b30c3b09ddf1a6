"""The engine's front door: named models loaded once, analyses cached, errors kept.

The UI and the CLI talk to an Engine; they never touch a model. Loading is lazy and
happens once per model (a load failure is remembered with its reason, never retried on
every request, never silently swapped for another model).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from attn.compute import ablation, compare, generation
from attn.compute import forward as inference
from attn.compute.ablation import Ablation
from attn.compute.analysis import Analysis
from attn.compute.cache import ByteLRU, CacheStats
from attn.compute.compare import Comparison
from attn.compute.generation import Generation
from attn.errors import AnalysisFailedError, AttnError, ModelUnavailableError, PromptError, UnknownModelError, echo
from attn.model import loading
from attn.model.loading import LoadedModel
from attn.model.registry import get_spec
from attn.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[str, Callable[[str], None]], LoadedModel]
Accelerator = Callable[[Callable], Callable]  # e.g. spaces.GPU(duration=10)


class Engine:
    def __init__(
        self,
        *,
        loader: Loader,
        model_names: list[str],
        cache_bytes: int = Settings.cache_bytes,
        max_tokens: int = Settings.max_tokens,
        accelerator: Accelerator | None = None,
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
        self._load_locks = {name: threading.Lock() for name in self.model_names}
        self._run_locks = {name: threading.Lock() for name in self.model_names}
        self.forward_calls = 0
        self.ablation_calls = 0  # ablations computed (each is several batched forward passes)
        self.generate_calls = 0  # generations computed (each is one KV-cached loop)
        self.unembed_calls = 0  # cross probabilities read from stored hidden states (no forward pass)
        # On ZeroGPU the accelerator (spaces.GPU) runs the forward pass in a forked worker:
        # its arguments and result are pickled, and nothing it changes here comes back.
        # So it gets only what it needs and returns a value; all bookkeeping stays here.
        wrap = accelerator or (lambda fn: fn)
        self._forward = wrap(self._forward_outcome)
        self._ablation_batch = wrap(self._ablation_batch_outcome)
        self._generate = wrap(self._generate_outcome)
        self._unembed = wrap(self._unembed_outcome)

    @classmethod
    def for_settings(cls, settings: Settings, accelerator: Accelerator | None = None) -> "Engine":
        """The engine of the app and the CLI: the registry's models as `settings` offer and
        load them."""
        return cls(loader=lambda name, progress: loading.load(name, settings, progress),
                   model_names=list(settings.models), cache_bytes=settings.cache_bytes,
                   max_tokens=settings.max_tokens, accelerator=accelerator)

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

    def preload(self, name: str) -> threading.Thread:
        """Start loading in the background so the server can answer meanwhile."""

        def run():
            try:
                self.model(name)
            except Exception:  # remembered in self._errors; reported by status()
                pass

        thread = threading.Thread(target=run, name=f"load-{name}", daemon=True)
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
        return "not loaded", ""

    def is_ready(self, name: str) -> bool:
        return name in self._models

    # ---- analysis -----------------------------------------------------------------
    def _forward_outcome(self, model_name: str, prompt: str, encoded) -> Analysis | AttnError:
        """The one forward pass, where the accelerator is."""
        return self._as_value("The model failed on this prompt", model_name,
                              lambda: inference.forward(self.model(model_name), prompt, encoded))

    def _ablation_batch_outcome(self, model_name: str, ids: list[int], chunk: list[int], next_id: int):
        """One batch of token deletions, where the accelerator is."""
        return self._as_value("The model failed while deleting tokens", model_name,
                              lambda: ablation.batch_p_next(self.model(model_name), ids, chunk, next_id))

    @staticmethod
    def _as_value(failure: str, model_name: str, job):
        """Errors come back as values: spaces would replace a raised one with a bare
        "ZeroGPU worker error"."""
        try:
            return job()
        except AttnError as exc:
            return exc
        except Exception as exc:
            log.exception("analysis failed on %s", model_name)
            failed = AnalysisFailedError(
                f"{failure} ({type(exc).__name__}); nothing was cached. Try again, or try another prompt."
            )
            failed.__cause__ = exc  # kept in process; a pickle across processes drops it
            return failed

    def _run(self, model_name: str, prompt: str) -> Analysis:
        encoded = inference.encode(self.model(model_name).tokenizer, prompt, self.max_tokens)  # bad input: no model call
        with self._run_locks[model_name]:
            # One forward pass per model at a time: bounded memory, no thread thrash.
            self.forward_calls += 1
            outcome = self._forward(model_name, prompt, encoded)
        if isinstance(outcome, AttnError):
            raise outcome
        return outcome

    def analyze(self, prompt: str, model_name: str) -> Analysis:
        """Cached analysis. Raises PromptError, UnknownModelError, ModelUnavailableError."""
        self._check_name(model_name)
        # Validate cheaply before waiting on a model load or a forward pass.
        if not isinstance(prompt, str):
            raise PromptError("The prompt must be text.")
        if not prompt.strip():
            raise PromptError("The prompt is empty: type some text to analyse.")
        return self.cache.get_or_compute((model_name, prompt), lambda: self._run(model_name, prompt))

    def cached(self, prompt: str, model_name: str) -> Analysis | None:
        return self.cache.get((model_name, prompt))

    # ---- ablation -----------------------------------------------------------------
    def ablate(
        self, prompt: str, model_name: str, progress: ablation.Progress | None = None
    ) -> Ablation:
        """Cached token ablation (attn/ablation.py), computed from the cached analysis.

        Each batch of deletions takes the model's run lock on its own, so analyses of
        other prompts wait for at most one batch, and views (served from the caches)
        never wait. `progress(done, total)` is called as batches finish.
        """
        analysis = self.analyze(prompt, model_name)
        return self.cache.get_or_compute(
            ("ablation", model_name, prompt), lambda: self._ablate_uncached(analysis, model_name, progress)
        )

    def cached_ablation(self, prompt: str, model_name: str) -> Ablation | None:
        return self.cache.get(("ablation", model_name, prompt))

    def _ablate_uncached(self, analysis: Analysis, model_name: str, progress) -> Ablation:
        loaded = self.model(model_name)
        ids, next_id = analysis.token_ids.tolist(), analysis.next_token_id

        def run(chunk: list[int]):
            with self._run_locks[model_name]:
                outcome = self._ablation_batch(model_name, ids, chunk, next_id)
            if isinstance(outcome, AttnError):
                raise outcome
            return outcome

        self.ablation_calls += 1
        return ablation.ablate(loaded, analysis, progress=progress, run=run)

    # ---- generation ---------------------------------------------------------------
    def _generate_outcome(self, model_name: str, prompt: str, encoded, settings: generation.Settings):
        """The KV-cached loop, where the accelerator is."""
        return self._as_value("The model failed while generating", model_name,
                              lambda: generation.decode(self.model(model_name), prompt, encoded, settings))

    def generate(
        self, prompt: str, model_name: str, max_new_tokens: int = 1, temperature: float = 0.0, seed: int = 0
    ) -> Generation:
        """Cached continuation of `prompt` (attn/generation.py): greedy at temperature 0,
        else sampled with `seed` (the same seed gives the same tokens). Bad settings or a bad
        prompt are refused (ViewError, PromptError) before any model call."""
        key, settings = self._generation_key(prompt, model_name, max_new_tokens, temperature, seed)
        self._check_prompt(prompt)
        return self.cache.get_or_compute(key, lambda: self._generate_uncached(model_name, prompt, settings))

    def cached_generation(
        self, prompt: str, model_name: str, max_new_tokens: int = 1, temperature: float = 0.0, seed: int = 0
    ) -> Generation | None:
        """The generation if it is cached (for views: never runs the model). Settings that
        `generate` would refuse raise the same ViewError."""
        return self.cache.get(self._generation_key(prompt, model_name, max_new_tokens, temperature, seed)[0])

    def _generation_key(self, prompt, model_name, max_new_tokens, temperature, seed):
        self._check_name(model_name)
        settings = generation.check_settings(max_new_tokens, temperature, seed)
        # Greedy settings carry seed None: every seed shares one entry.
        key = ("generation", model_name, prompt, settings.max_new_tokens, settings.temperature, settings.seed)
        return key, settings

    def _generate_uncached(self, model_name: str, prompt: str, settings: generation.Settings) -> Generation:
        tokenizer = self.model(model_name).tokenizer
        encoded = inference.encode(tokenizer, prompt, self.max_tokens)  # bad input: no model call
        with self._run_locks[model_name]:
            self.generate_calls += 1
            outcome = self._generate(model_name, prompt, encoded, settings)
        if isinstance(outcome, AttnError):
            raise outcome
        return outcome

    # ---- comparison ---------------------------------------------------------------
    def _unembed_outcome(self, model_name: str, hidden, token_ids: list[int]):
        """Token probabilities from stored final hidden states, where the accelerator is."""
        return self._as_value("The model failed while comparing", model_name,
                              lambda: compare.unembed_probs(self.model(model_name), hidden, token_ids))

    def compare(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        """Two prompts side by side (attn/compare.py): both cached analyses, their tokens
        aligned, and the probability each gives to the other's next token. Costs the two
        analyses (none if cached) and at most one unembedding, never a third forward pass.
        An error about a prompt says which one ("Prompt B: ...")."""
        self._check_name(model_name)
        prompts = (("A", prompt_a), ("B", prompt_b))
        for label, prompt in prompts:  # both checked before any model load or call
            _labelled(label, lambda: self._check_prompt(prompt))
        tokenizer = self.model(model_name).tokenizer
        for label, prompt in prompts:
            _labelled(label, lambda: inference.encode(tokenizer, prompt, self.max_tokens))
        key = ("compare", model_name, prompt_a, prompt_b)
        return self.cache.get_or_compute(key, lambda: self._compare_uncached(prompt_a, prompt_b, model_name))

    def cached_comparison(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison | None:
        return self.cache.get(("compare", model_name, prompt_a, prompt_b))

    def _compare_uncached(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        a = _labelled("A", lambda: self.analyze(prompt_a, model_name))
        b = _labelled("B", lambda: self.analyze(prompt_b, model_name))

        def unembed(hidden, token_ids):
            with self._run_locks[model_name]:
                self.unembed_calls += 1
                outcome = self._unembed(model_name, hidden, token_ids)
            if isinstance(outcome, AttnError):
                raise outcome
            return outcome

        return compare.compare(a, b, unembed=unembed)

    # ---- helpers ------------------------------------------------------------------
    @staticmethod
    def _check_prompt(prompt) -> None:
        """The cheap checks, before waiting on a model load or a forward pass."""
        if not isinstance(prompt, str):
            raise PromptError("The prompt must be text.")
        if not prompt.strip():
            raise PromptError("The prompt is empty: type some text to analyse.")

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()


def _labelled(label: str, job):
    """Run `job`; an error about its prompt comes back naming it ("Prompt B: ...").
    Errors about the model (unknown, unavailable) concern both prompts and stay as they are."""
    try:
        return job()
    except (UnknownModelError, ModelUnavailableError):
        raise
    except AttnError as exc:
        raise type(exc)(f"Prompt {label}: {exc}") from exc
