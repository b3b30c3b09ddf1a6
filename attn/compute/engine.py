"""The engine's front door: named models loaded once, analyses cached, errors kept.

The UI and the CLI talk to an Engine; they never touch a model. Loading is lazy and
happens once per model (a load failure is remembered with its reason, never retried on
every request, never silently swapped for another model).

A model call runs one of two ways. In this process, under the model's run lock (one call per
model at a time: bounded memory, no thread thrash). Or, for the models given as `gpu_models`,
through the accelerator (spaces.GPU on ZeroGPU) without a lock: the platform queues the call
and runs calls in parallel workers, and a lock held across its queue would make every visitor
of the model wait behind one queued visitor. One user action is one GPU call (each is a
request against the visitor's quota): an analysis, a comparison, a whole ablation, a
continuation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Callable

from attn.compute import ablation, compare, generation
from attn.compute.ablation import Ablation
from attn.compute.analysis import Analysis
from attn.compute.cache import ByteLRU, CacheStats
from attn.compute.compare import Comparison, labelled
from attn.compute.duration import gpu_seconds
from attn.compute.encode import Encoded, check_prompt, encode
from attn.compute.generation import Generation
from attn.compute.jobs import JOBS, device_fault, work_of
from attn.errors import AnalysisFailedError, AttnError, ModelUnavailableError, PlatformError, UnknownModelError, echo
from attn.model import loading
from attn.model.loading import LoadedModel
from attn.model.registry import REGISTRY, get_spec
from attn.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[str, Callable[[str], None]], LoadedModel]
# Wraps the engine's GPU entry point (job, model_name, work, *args) -> value; e.g. attn.web.gpu's.
Accelerator = Callable[[Callable], Callable]


class Engine:
    def __init__(
        self,
        *,
        loader: Loader,
        model_names: list[str],
        cache_bytes: int = Settings.cache_bytes,
        max_tokens: int = Settings.max_tokens,
        accelerator: Accelerator | None = None,
        gpu_models: list[str] | None = None,  # through the accelerator; None: every model, when one is given
    ):
        self.max_tokens = max_tokens
        # Analyses under (model, prompt), ablations under ("ablation", model, prompt),
        # generations under ("generation", model, prompt, n, temperature, seed), comparisons
        # under ("compare", model, prompt_a, prompt_b). A platform's refusal is never cached
        # and never handed to another request for the same key.
        self.cache: ByteLRU[Analysis | Ablation | Generation | Comparison] = ByteLRU(
            cache_bytes, size_of=lambda a: a.nbytes, private=(PlatformError,))
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
        self.cpu_calls = 0  # model calls run in this process
        self.gpu_calls = 0  # calls sent through the accelerator (requests to ZeroGPU)
        self.gpu_seconds_requested = 0  # the durations those asked for (attn/compute/duration.py)
        self.refusals: Counter[str] = Counter()  # PlatformErrors by kind (a refusal's, or "gpu_fault")
        if accelerator is None:
            gpu_models = []
        self._gpu_models = set(self.model_names if gpu_models is None else gpu_models)
        self._pid = os.getpid()
        self._counting = threading.Lock()
        # On ZeroGPU the accelerator (spaces.GPU) runs a call in a forked worker: its
        # arguments and result are pickled, and nothing it changes here comes back. So it
        # gets only what it needs and returns a value; all bookkeeping stays here.
        self._remote = (accelerator or (lambda fn: fn))(self._on_gpu)

    @classmethod
    def for_settings(cls, settings: Settings, accelerator: Accelerator | None = None) -> "Engine":
        """The engine of the app and the CLI: the registry's models as `settings` offer and
        load them."""
        return cls(loader=lambda name, progress: loading.load(name, settings, progress),
                   model_names=list(settings.models), cache_bytes=settings.cache_bytes,
                   max_tokens=settings.max_tokens, accelerator=accelerator,
                   gpu_models=[name for name in settings.models if settings.uses_gpu(name)])

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
            if name in self._gpu_models and threading.current_thread() is not threading.main_thread():
                # ZeroGPU emulates cuda in the main thread only: a move to cuda from another
                # thread (a request's, a background load's, a worker's) raises there.
                label = REGISTRY[name].label if name in REGISTRY else name
                self._errors[name] = (f"{label} was not loaded when the app started; on ZeroGPU a GPU model "
                                      "can be placed on the GPU only then.")
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

    # ---- the one path of every model call -----------------------------------------
    def uses_gpu(self, model_name: str) -> bool:
        """Whether `model_name`'s calls go through the accelerator (a GPU on ZeroGPU)."""
        return model_name in self._gpu_models

    def _call(self, job: str, model_name: str, *args):
        """Run `job` on the model: through the accelerator for a GPU model (no lock: the
        platform queues), else here under its run lock. Counted here; an error that comes
        back as a value is raised here."""
        if model_name not in self._gpu_models:
            self._count(JOBS[job].counter, "cpu_calls")
            with self._run_locks[model_name]:
                outcome = self._outcome(job, model_name, *args)
        else:
            work = work_of(job, *args)
            self._count(JOBS[job].counter, "gpu_calls", gpu_seconds_requested=gpu_seconds(work))
            try:
                outcome = self._remote(job, model_name, work, *args)
            except PlatformError as exc:
                with self._counting:
                    self.refusals[exc.kind] += 1
                raise
        if isinstance(outcome, AttnError):
            raise outcome
        return outcome

    def _count(self, *names: str | None, **amounts: int) -> None:
        """Add one to each counter named (None: none), and each amount to its counter: calls
        come from many threads, and a GPU call counts outside any run lock."""
        with self._counting:
            for name in filter(None, names):
                setattr(self, name, getattr(self, name) + 1)
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def _on_gpu(self, job: str, model_name: str, work, *args):
        """A GPU call, where the accelerator runs it (a forked worker on ZeroGPU). `work` is
        for the accelerator's duration."""
        if os.getpid() != self._pid:
            # A fork cannot use the parent's OpenMP threads (it hangs in them): the little CPU
            # work beside a GPU call runs on one thread.
            import torch

            torch.set_num_threads(1)
        return self._outcome(job, model_name, *args, worker=True)

    def _outcome(self, job: str, model_name: str, *args, worker: bool = False):
        """The call itself. Errors come back as values (spaces would replace a raised one with
        a bare "ZeroGPU worker error"), except a CUDA failure in a GPU `worker`: raised, so
        that spaces replaces the worker whose device it broke."""
        try:
            return JOBS[job].run(self.model(model_name), *args)
        except AttnError as exc:
            return exc
        except Exception as exc:
            log.exception("analysis failed on %s", model_name)
            fault = device_fault(exc, JOBS[job].failure) if worker else None
            if fault is not None:
                raise fault from exc
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
        return self.cache.get_or_compute((model_name, prompt), lambda: self._analyze_uncached(prompt, model_name))

    def _analyze_uncached(self, prompt: str, model_name: str) -> Analysis:
        return self._call("forward", model_name, prompt, self._encode(model_name, prompt))

    def cached(self, prompt: str, model_name: str) -> Analysis | None:
        return self.cache.get((model_name, prompt))

    # ---- ablation -----------------------------------------------------------------
    def ablate(
        self, prompt: str, model_name: str, progress: ablation.Progress | None = None
    ) -> Ablation:
        """Cached token ablation (attn/compute/ablation.py), computed from the cached analysis.

        On the CPU each batch of deletions takes the model's run lock on its own, so analyses
        of other prompts wait for at most one batch, and views (served from the caches) never
        wait; `progress(done, total)` is called as batches finish. On a GPU every deletion is
        one call, its batches looped inside it (`progress` hears the start and the end).
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
        self._count("ablation_calls")
        return ablation.ablate(loaded, analysis, progress=progress,
                               batch_tokens=ablation.EVERY_ROW if self.uses_gpu(model_name) else None,
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
        return self.cache.get_or_compute(key, lambda: self._call(
            "generate", model_name, prompt, self._encode(model_name, prompt), continuation))

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
            labelled(label, lambda: check_prompt(prompt, self.max_tokens))
        for label, prompt in prompts:
            labelled(label, lambda: self._encode(model_name, prompt))
        key = ("compare", model_name, prompt_a, prompt_b)
        return self.cache.get_or_compute(key, lambda: self._compare_uncached(prompt_a, prompt_b, model_name))

    def cached_comparison(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison | None:
        return self.cache.get(("compare", model_name, prompt_a, prompt_b))

    def _compare_uncached(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        if self.uses_gpu(model_name):
            return self._compare_in_one_call(prompt_a, prompt_b, model_name)
        # Here each analysis takes the run lock on its own (and is single-flight per prompt).
        a = labelled("A", lambda: self.analyze(prompt_a, model_name))
        b = labelled("B", lambda: self.analyze(prompt_b, model_name))
        return compare.compare(a, b, unembed=lambda hidden, token_ids: self._call(
            "unembed", model_name, hidden, token_ids))

    def _compare_in_one_call(self, prompt_a: str, prompt_b: str, model_name: str) -> Comparison:
        """One GPU call: the analyses not cached yet, and the cross probabilities. The
        analyses it makes are cached like any other."""
        known_a, known_b = self.cached(prompt_a, model_name), self.cached(prompt_b, model_name)
        side_a = known_a if known_a is not None else (prompt_a, self._encode(model_name, prompt_a))
        side_b = None if prompt_b == prompt_a else (
            known_b if known_b is not None else (prompt_b, self._encode(model_name, prompt_b)))
        pair = self._call("compare", model_name, side_a, side_b)
        for prompt, new in ((prompt_a, pair.new_a), (prompt_b, pair.new_b)):
            if new is not None:
                self._count("forward_calls")
                self.cache.put((model_name, prompt), new)
        self._count("unembed_calls" if pair.unembedded else None)
        a = known_a if pair.new_a is None else pair.new_a
        b = a if side_b is None else (known_b if pair.new_b is None else pair.new_b)
        return Comparison(a=a, b=b, alignment=compare.align(a.tokens, b.tokens),
                          p_b_of_a_next=pair.p_b_of_a_next, p_a_of_b_next=pair.p_a_of_b_next)

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

