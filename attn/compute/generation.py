"""Continue a prompt for a few tokens, keeping for every step the attention that chose it.

The tokens come from a KV-cached loop: one pass over [BOS] + prompt, then one position per
step. Each step's attention is read from the very pass that predicted the token: a hook on
every layer's attention module copies the predicting query's row (heads x keys) and lets
the layer's weights go. So nothing runs twice and no (T x T) matrix is kept: a step at
position t gets exactly the row a forward pass over its prefix would give (to float
rounding; tests/test_generation.py checks 1e-5), because the model is causal.

Why not one teacher-forced pass over the finished sequence after generating: it repeats the
prompt's pass (as long again at 2048 tokens) to recompute rows the loop already had.

Memory at a 2048-token prompt + 32 steps (Gemma 3 270M, float32, CPU): the result holds
(32, 18, 4, 2079) float32 = 18.3 MiB of attention (19.3 MiB in all, against 1.5 MiB for an
analysis); the prefill computes one layer's (4, 2048, 2048) weights at a time (64 MiB, let go
with the layer) where an analysis keeps all 18 layers' (1.2 GB). Peak RSS of a fresh process,
two runs: loaded 1.6 GiB; load + generation 2.0 GiB; load + analysis of the same prompt
3.1 GiB (`python bench/generation.py --memory`).
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
class Settings:
    """How to continue: how many tokens, and greedy (temperature 0) or sampled."""

    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy (argmax); else softmax(logits / temperature) is sampled
    seed: int | None = None  # the sampler's seed; None when greedy (no randomness to seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_settings(max_new_tokens, temperature=0.0, seed=0) -> Settings:
    """The one rule for valid settings (page, API, CLI). Raises ViewError."""
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
        return Settings(n, 0.0, None)  # the seed changes nothing: one cache entry for all seeds
    s = _whole(seed, "The seed")
    if not 0 <= s <= MAX_SEED:
        raise ViewError(f"The seed must be 0-{MAX_SEED}, not {s}.")
    return Settings(n, t, s)


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
    """A prompt continued for up to max_new_tokens tokens, with each step's attention.

    Step k predicted generated token k from keys [BOS] + prompt + generated[:k]: the
    prompt's P tokens and k generated ones. `step_analysis(k)` gives it as an Analysis,
    so every view draws a step as it draws a typed prompt."""

    model: str
    model_source: str
    dtype: str
    prompt: str
    tokens: list[str]  # the prompt's display strings, BOS first: P of them
    token_ids: np.ndarray  # (P,) int64
    spans: list[tuple[int, int]]  # character span of each prompt token in `prompt`, as in Analysis
    generated_ids: np.ndarray  # (N,) int64, N <= max_new_tokens (fewer when EOS came first)
    generated: list[str]  # (N,) display strings of the generated tokens
    probs: np.ndarray  # (N,) float32: the model's probability (temperature 1) of each chosen token
    top_k: list[list[TokenProb]]  # (N, TOP_K): the model's most likely tokens at each step (temperature 1)
    layer_types: list[str]  # "global" | "local", per layer
    sliding_window: int | None
    num_heads: int
    attention: np.ndarray  # (N, layers, heads, P + N - 1) float32: step k's row over its P + k keys, zeros after
    key_value_norms: np.ndarray | None  # (layers, heads, P + N - 1) float32: ||W_O^h v_j||_2 per key j, unweighted
    max_new_tokens: int
    temperature: float  # 0: greedy
    seed: int | None  # None when greedy
    stopped_at_eos: bool  # the last generated token is an end-of-sequence token

    @property
    def num_steps(self) -> int:
        return len(self.generated)

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.tokens)

    @property
    def text(self) -> str:
        """The continuation as display strings joined (what the page prints after the prompt)."""
        return "".join(self.generated)

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the engine cache's byte bound."""
        text = len(self.prompt) * 4 + sum(len(t) * 4 + 64 for t in self.tokens + self.generated)
        arrays = self.attention.nbytes + self.token_ids.nbytes + self.generated_ids.nbytes + self.probs.nbytes
        if self.key_value_norms is not None:
            arrays += self.key_value_norms.nbytes
        tops = sum(len(t.token) * 4 + 120 for step in self.top_k for t in step)
        return arrays + text + tops + 96 * len(self.spans) + 1024

    def step_analysis(self, k: int) -> Analysis:
        """Step k as an Analysis: tokens [BOS] + prompt + generated[:k], next token
        generated[k]. No model call; the logit lens, rollout and full matrices are None
        (they need every position's rows), value-weighted attention is kept.

        Its `prompt` is the prompt followed by the generated display strings, so it names
        the text, not the generation: two generations (or a typed prompt) with the same
        text share it, whatever the next token."""
        k = self._check_step(k)
        n_keys = self.num_prompt_tokens + k
        chosen = int(self.generated_ids[k])
        top = list(self.top_k[k])
        if all(t.id != chosen for t in top):  # a sampled token outside the top TOP_K
            top.append(TokenProb(self.generated[k], chosen, float(self.probs[k])))
        spans, end = list(self.spans), len(self.prompt)
        for piece in self.generated[:k]:
            spans.append((end, end + len(piece)))
            end += len(piece)
        last_row = np.ascontiguousarray(self.attention[k, :, :, :n_keys])
        value_norms = None
        if self.key_value_norms is not None:
            value_norms = np.ascontiguousarray(last_row * self.key_value_norms[:, :, :n_keys], dtype=np.float32)
        return Analysis(
            model=self.model,
            model_source=self.model_source,
            dtype=self.dtype,
            prompt=self.prompt + "".join(self.generated[:k]),
            tokens=self.tokens + self.generated[:k],
            token_ids=np.concatenate([self.token_ids, self.generated_ids[:k]]).astype(np.int64),
            spans=spans,
            next_token=self.generated[k],
            next_token_id=chosen,
            top_k=top,
            layer_types=list(self.layer_types),
            sliding_window=self.sliding_window,
            num_heads=self.num_heads,
            last_row=last_row,
            full=None,
            value_norms=value_norms,
            generated_from=self.num_prompt_tokens,
        )

    def _check_step(self, k) -> int:
        step = _whole(k, "The step")
        if not 0 <= step < self.num_steps:
            raise ViewError(f"Step {step} is out of range: this generation has steps 0-{self.num_steps - 1}.")
        return step

    def to_json(self, digits: int = 6) -> dict:
        """What /generate returns (see README): step k's attention is [layer][head][key]
        over keys <BOS> + prompt + generated[:k]."""
        p = self.num_prompt_tokens
        return {
            "schema": GENERATION_SCHEMA,
            "model": self.model,
            "prompt": self.prompt,
            "generated_ids": [int(i) for i in self.generated_ids],
            "generated": list(self.generated),
            "steps": [
                {"token": self.generated[k], "id": int(self.generated_ids[k]),
                 "prob": round(float(self.probs[k]), digits),
                 "attention": _rounded(self.attention[k, :, :, :p + k], digits)}
                for k in range(self.num_steps)
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
    """Encode, check the settings, continue. Returns CPU numpy only (safe to pickle)."""
    settings = check_settings(max_new_tokens, temperature, seed)
    return decode(loaded, prompt, encode(loaded.tokenizer, prompt, max_tokens), settings)


def decode(loaded: LoadedModel, prompt: str, encoded: Encoded, settings: Settings) -> Generation:
    """The KV-cached loop, for an already validated `encode()` result and settings."""
    import torch

    ids, tokens, spans = encoded
    parts = _parts_with_attention(loaded)
    n_prompt, steps = len(ids), settings.max_new_tokens
    width = n_prompt + steps - 1  # the last step's keys; the last token is never fed back
    device = loaded.device
    attention = torch.zeros((steps, loaded.num_layers, loaded.num_heads, width), dtype=torch.float32, device=device)
    capture = Capture(parts, value_norms=True, rows=True)
    norms = None if parts.value_out is None else torch.zeros(
        (loaded.num_layers, loaded.num_heads, width), dtype=torch.float32, device=device)
    sampler = None
    if not settings.greedy:
        sampler = torch.Generator(device=device)
        sampler.manual_seed(settings.seed)
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
                sample_p = torch.softmax(logits / settings.temperature, dim=-1)
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
    return Generation(
        model=loaded.name,
        model_source=loaded.source,
        dtype=loaded.dtype,
        prompt=prompt,
        tokens=list(tokens),
        token_ids=np.asarray(ids, dtype=np.int64),
        spans=list(spans),
        generated_ids=np.asarray(chosen, dtype=np.int64),
        generated=[decode_one(tok, i) for i in chosen],
        probs=probs,
        top_k=[[TokenProb(decode_one(tok, int(i)), int(i), float(q)) for q, i in zip(ps, is_)]
               for ps, is_ in zip(top_p, top_i)],
        layer_types=list(loaded.layer_types),
        sliding_window=loaded.sliding_window,
        num_heads=loaded.num_heads,
        attention=attention_np,
        key_value_norms=norms_np,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        stopped_at_eos=chosen[-1] in stop_ids,
    )


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
