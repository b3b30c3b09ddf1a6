"""Continue a prompt for a few tokens, keeping for every step the attention that chose it.

The tokens come from a KV-cached loop: one pass over [BOS] + prompt, then one position per
step. Each step's attention is read from the very pass that predicted the token: a hook on
every layer's attention module copies the predicting query's row (heads x keys) and lets
the layer's weights go. So nothing runs twice and no (T x T) matrix is kept: a step at
position t gets exactly the row a forward pass over its prefix would give (to float
rounding; tests/test_generation.py checks 1e-5), because the model is causal.

Why not one teacher-forced pass over the finished sequence after generating: it repeats the
prompt's pass (as long again at 2048 tokens) to recompute rows the loop already had.

Memory at a 2048-token prompt + 32 steps (Gemma 3 270M, float32, CPU): the result's 32 steps
hold (18, 4, 2048 + k) float32 rows each, 18.0 MiB of attention and as much of value-weighted
attention (39.4 MiB in all, against 1.5 MiB for an analysis); the prefill computes one layer's
(4, 2048, 2048) weights at a time (64 MiB, let go with the layer) where an analysis keeps all
18 layers' (1.2 GB). Peak RSS of a fresh process, two runs: loaded 1.6 GiB; load + generation
2.0 GiB; load + analysis of the same prompt 3.1 GiB (`python bench/generation.py --memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attn.compute.analysis import Analysis, TokenProb, _rounded
from attn.compute.encode import DEFAULT_MAX_TOKENS, Encoded, decode_one, encode
from attn.compute.hooks import Capture, Parts, find_parts
from attn.compute.integrity import check_rows
from attn.errors import ModelUnavailableError, ViewError, echo
from attn.model.loading import LoadedModel

GENERATION_SCHEMA = "attn-generation/1"
MAX_NEW_TOKENS = 32  # each step costs about one decode step of the model (~0.1 s on this CPU)
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1  # a seed a browser's JSON numbers carry exactly
TOP_K = 10


@dataclass(frozen=True)
class Continuation:
    """How to continue: how many tokens, and greedy (temperature 0) or sampled."""

    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy (argmax); else softmax(logits / temperature) is sampled
    seed: int | None = None  # the sampler's seed; None when greedy (no randomness to seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_continuation(max_new_tokens, temperature=0.0, seed=0) -> Continuation:
    """The one rule for a valid continuation (page, API, CLI). Raises ViewError."""
    n = _whole(max_new_tokens, "The number of tokens to generate")
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise ViewError(f"The number of tokens to generate must be 1-{MAX_NEW_TOKENS}, not {n}.")
    try:
        t = float(temperature)
    except (TypeError, ValueError, OverflowError):
        raise ViewError(f"Temperature must be a number, not {echo(temperature)}.") from None
    if isinstance(temperature, bool) or not math.isfinite(t) or not 0.0 <= t <= MAX_TEMPERATURE:
        raise ViewError(
            f"Temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, not {echo(temperature)}."
        )
    if t == 0.0:
        return Continuation(n, 0.0, None)  # the seed changes nothing: one cache entry for all seeds
    s = _whole(seed, "The seed")
    if not 0 <= s <= MAX_SEED:
        raise ViewError(f"The seed must be 0-{MAX_SEED}, not {s}.")
    return Continuation(n, t, s)


def _whole(value, what: str) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != number):
            raise ValueError("not a whole number")
    except (TypeError, ValueError, OverflowError):
        raise ViewError(f"{what} must be a whole number, not {echo(value)}.") from None
    return number


@dataclass(frozen=True)
class Generation:
    """A prompt continued for up to max_new_tokens tokens, each step an Analysis.

    Step k predicted generated token k from keys [BOS] + prompt + generated[:k]: the
    prompt's P tokens and k generated ones. So every view draws a step as it draws a typed
    prompt; the logit lens, rollout and full matrices are None (they need every position's
    rows, which the KV-cached loop never computes), value-weighted attention is kept.

    A step's `prompt` is the prompt followed by the generated display strings, so it names
    the text, not the generation: two generations (or a typed prompt) with the same text
    share it, whatever the next token."""

    steps: tuple[Analysis, ...]  # (N,), N <= max_new_tokens (fewer when EOS came first)
    probs: np.ndarray  # (N,) float32: the model's probability (temperature 1) of each chosen token
    continuation: Continuation
    stopped_at_eos: bool  # the last generated token is an end-of-sequence token

    @property
    def prompt(self) -> str:
        return self.steps[0].prompt

    @property
    def model(self) -> str:
        return self.steps[0].model

    @property
    def dtype(self) -> str:
        return self.steps[0].dtype

    @property
    def generated(self) -> list[str]:
        """(N,) display strings of the generated tokens."""
        return [step.next_token for step in self.steps]

    @property
    def generated_ids(self) -> np.ndarray:
        """(N,) int64 ids of the generated tokens."""
        return np.asarray([step.next_token_id for step in self.steps], dtype=np.int64)

    @property
    def max_new_tokens(self) -> int:
        return self.continuation.max_new_tokens

    @property
    def temperature(self) -> float:
        return self.continuation.temperature  # 0: greedy

    @property
    def seed(self) -> int | None:
        return self.continuation.seed  # None when greedy

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def num_prompt_tokens(self) -> int:
        return self.steps[0].num_tokens

    @property
    def text(self) -> str:
        """The continuation as display strings joined (what the page prints after the prompt)."""
        return "".join(self.generated)

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the engine cache's byte bound: every step's own
        arrays, prompt text, token lists and top-k; the token strings and spans they share,
        once."""
        last = self.steps[-1]
        shared = sum(len(t) * 4 + 64 for t in last.tokens) + 96 * len(last.spans)
        own = 0
        for step in self.steps:
            own += step.last_row.nbytes + step.token_ids.nbytes + len(step.prompt) * 4 + 16 * step.num_tokens
            own += 0 if step.value_norms is None else step.value_norms.nbytes
            own += sum(len(t.token) * 4 + 120 for t in step.top_k)
        return shared + own + self.probs.nbytes + 1024

    def step_analysis(self, k) -> Analysis:
        """Step k: tokens [BOS] + prompt + generated[:k], next token generated[k]. No model call."""
        step = _whole(k, "The step")
        if not 0 <= step < self.num_steps:
            raise ViewError(f"Step {step} is out of range: this generation has steps 0-{self.num_steps - 1}.")
        return self.steps[step]

    def to_json(self, digits: int = 6) -> dict:
        """What /generate returns (docs/api.md): step k's attention is [layer][head][key]
        over keys <BOS> + prompt + generated[:k]."""
        return {
            "schema": GENERATION_SCHEMA,
            "model": self.model,
            "prompt": self.prompt,
            "generated_ids": [int(step.next_token_id) for step in self.steps],
            "generated": self.generated,
            "steps": [
                {"token": step.next_token, "id": int(step.next_token_id),
                 "prob": round(float(self.probs[k]), digits),
                 "attention": _rounded(step.last_row, digits)}
                for k, step in enumerate(self.steps)
            ],
        }


def generate(
    loaded: LoadedModel,
    prompt: str,
    max_new_tokens: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Generation:
    """Check the continuation, encode, continue. Returns CPU numpy only (safe to pickle)."""
    continuation = check_continuation(max_new_tokens, temperature, seed)
    return decode(loaded, prompt, encode(loaded.tokenizer, prompt, max_tokens), continuation)


def decode(loaded: LoadedModel, prompt: str, encoded: Encoded, continuation: Continuation) -> Generation:
    """The KV-cached loop, for an already validated `encode()` result and continuation."""
    import torch

    ids = encoded[0]
    parts = _parts_with_attention(loaded)
    n_prompt, steps = len(ids), continuation.max_new_tokens
    width = n_prompt + steps - 1  # the last step's keys; the last token is never fed back
    device = loaded.device
    attention = torch.zeros((steps, loaded.num_layers, loaded.num_heads, width), dtype=torch.float32, device=device)
    capture = Capture(parts, value_norms=True, rows=True)
    norms = None if parts.value_out is None else torch.zeros(
        (loaded.num_layers, loaded.num_heads, width), dtype=torch.float32, device=device)
    sampler = None
    if not continuation.greedy:
        sampler = torch.Generator(device=device)
        sampler.manual_seed(continuation.seed)
    stop_ids = eos_ids(loaded)
    chosen: list[int] = []
    chosen_p, top_p, top_i = [], [], []
    step_input = torch.tensor([ids], device=device)
    cache = None
    with torch.inference_mode(), capture:
        for k in range(steps):
            n_keys = n_prompt + k
            capture.rows_into(attention[k], n_keys)
            out = _step(loaded.model, step_input, cache)
            cache = out.cache
            if norms is not None:  # the keys this pass added: the prompt's, then one a step
                new = torch.stack([capture.value_norms[i] for i in range(loaded.num_layers)])  # (L, H, fed)
                norms[:, :, n_keys - new.shape[-1]:n_keys] = new.float()
            logits = out.logits[0, -1].float()
            p = torch.softmax(logits, dim=-1)
            if sampler is None:
                next_id = int(torch.argmax(logits))
            else:
                sample_p = torch.softmax(logits / continuation.temperature, dim=-1)
                next_id = int(torch.multinomial(sample_p, 1, generator=sampler))
            top = torch.topk(p, k=min(TOP_K, p.numel()))
            chosen.append(next_id)
            chosen_p.append(p[next_id])
            top_p.append(top.values)
            top_i.append(top.indices)
            if next_id in stop_ids:
                break
            step_input = torch.tensor([[next_id]], device=device)
        del out, cache
        n = len(chosen)
        attention = attention[:n, :, :, :n_prompt + n - 1]
        check_rows(attention, n_prompt, capture.keys_seen, capture.missing,
                   loaded.layer_types, loaded.sliding_window, loaded.dtype)
        attention_np = np.ascontiguousarray(attention.cpu().numpy(), dtype=np.float32)
        norms_np = None if norms is None else np.ascontiguousarray(
            norms[:, :, :n_prompt + n - 1].cpu().numpy(), dtype=np.float32)
        probs = torch.stack(chosen_p).cpu().numpy().astype(np.float32)
        top_p = torch.stack(top_p).tolist()
        top_i = torch.stack(top_i).tolist()
    tok = loaded.tokenizer
    tops = [[TokenProb(decode_one(tok, int(i)), int(i), float(q)) for q, i in zip(ps, is_)]
            for ps, is_ in zip(top_p, top_i)]
    return Generation(
        steps=_step_analyses(loaded, prompt, encoded, chosen, probs, tops, attention_np, norms_np),
        probs=probs,
        continuation=continuation,
        stopped_at_eos=chosen[-1] in stop_ids,
    )


def _step_analyses(loaded: LoadedModel, prompt: str, encoded: Encoded, chosen: list[int], probs: np.ndarray,
           tops: list[list[TokenProb]], attention: np.ndarray, norms: np.ndarray | None) -> tuple[Analysis, ...]:
    """Step k as an Analysis, from the loop's (N, layers, heads, P + N - 1) rows (zeros after
    step k's P + k keys) and the (layers, heads, P + N - 1) per-key value norms."""
    ids, tokens, spans = encoded
    n_prompt = len(ids)
    token_ids = np.asarray(ids, dtype=np.int64)
    generated_ids = np.asarray(chosen, dtype=np.int64)
    generated = [decode_one(loaded.tokenizer, i) for i in chosen]
    steps, spans, end = [], list(spans), len(prompt)
    for k, next_id in enumerate(chosen):
        if k:  # the token generated by the step before joins the text
            spans = spans + [(end, end + len(generated[k - 1]))]
            end += len(generated[k - 1])
        top = list(tops[k])
        if all(t.id != next_id for t in top):  # a sampled token outside the top TOP_K
            top.append(TokenProb(generated[k], next_id, float(probs[k])))
        n_keys = n_prompt + k
        last_row = np.ascontiguousarray(attention[k, :, :, :n_keys])
        value_norms = None
        if norms is not None:
            value_norms = np.ascontiguousarray(last_row * norms[:, :, :n_keys], dtype=np.float32)
        steps.append(Analysis(
            model=loaded.name,
            model_source=loaded.source,
            dtype=loaded.dtype,
            prompt=prompt + "".join(generated[:k]),
            tokens=list(tokens) + generated[:k],
            token_ids=np.concatenate([token_ids, generated_ids[:k]]).astype(np.int64),
            spans=spans,
            next_token=generated[k],
            next_token_id=next_id,
            top_k=top,
            layer_types=list(loaded.layer_types),
            sliding_window=loaded.sliding_window,
            num_heads=loaded.num_heads,
            last_row=last_row,
            full=None,
            value_norms=value_norms,
            generated_from=n_prompt,
        ))
    return tuple(steps)


def _step(model, input_ids, cache):
    """One pass: the prompt on the first call, one new token after; logits of the last
    position only (the (T x vocab) projection costs more than the layers at 37 tokens)."""
    try:
        return model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
    except TypeError:  # a model without logits_to_keep
        return model(input_ids=input_ids, cache=cache, use_cache=True)


def eos_ids(loaded: LoadedModel) -> set[int]:
    """The tokens that end a generation: the generation config's (Gemma 3 may list
    several) and the tokenizer's."""
    found: set[int] = set()
    config = getattr(loaded.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            found.add(value)
        elif value is not None:
            found.update(int(v) for v in value)
    return found


def _parts_with_attention(loaded: LoadedModel) -> Parts:
    """The model's parts, with each decoder layer's attention module (the one that returns
    the weights) found. Raises ModelUnavailableError."""
    parts = find_parts(loaded.model)
    if parts is None or parts.attention is None or len(parts.attention) != loaded.num_layers:
        raise ModelUnavailableError(
            f"Model {loaded.name!r} does not expose its attention modules, so its generation steps cannot be read."
        )
    return parts
