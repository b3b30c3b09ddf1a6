"""Token ablation, the causal check: delete one prompt token, run the model again, and see
how the probability of the original next token moves.

Attention says where a prediction looked; deleting a token says whether it mattered.
Every deletion leaves T-1 tokens, so the shortened prompts batch without padding. The
batches are bounded in tokens, and each one is a separate call to `run`, so a caller can
take its one-forward-at-a-time lock per batch and let other requests in between (the CPU),
or make one call of all the deletions and loop the batches inside it (a ZeroGPU GPU, where
each call is a request against the visitor's quota; `device_batch_tokens` sizes them there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from attn.compute import measures
from attn.compute.analysis import Analysis
from attn.compute.hooks import find_parts
from attn.model.loading import LoadedModel

ABLATION_SCHEMA = "attn-ablation/1"
EXHAUSTIVE_MAX_TOKENS = 64  # up to this many tokens (with <BOS>), every token is deleted in turn
MOST_ATTENDED = 32  # beyond it, the tokens with the most attention (mean over layers and heads)
BATCH_TOKENS = 4096  # tokens per batched forward on the CPU: bounds memory and how long one batch holds a lock
EVERY_ROW = 2**62  # batch_tokens for `ablate` when `run` takes every deletion in one call
GPU_MEMORY_SHARE = 0.5  # of the GPU memory free when a call starts, what one batch may take

Progress = Callable[[int, int], None]  # (deletions done, deletions in all)
# Runs one batch: the positions deleted in each row -> P(next) per row. The engine's runner
# takes the model's lock and goes through the accelerator (a forked worker on ZeroGPU), so
# it gets plain, picklable arguments.
Runner = Callable[[list[int]], np.ndarray]


@dataclass(frozen=True)
class Deletion:
    index: int  # into `tokens`; <BOS> (0) is never deleted
    token: str
    p_next: float  # probability of the original next token without this token
    delta: float  # p_next minus the original probability


@dataclass(frozen=True)
class Ablation:
    model: str
    prompt: str
    tokens: list[str]  # display strings, BOS first (as in the Analysis)
    next_token: str
    next_token_id: int
    p_next: float  # the original probability of next_token
    deletions: list[Deletion]  # in prompt order
    exhaustive: bool  # every token deleted, or only the MOST_ATTENDED most attended

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the engine cache's byte bound."""
        text = len(self.prompt) * 4 + sum(len(t) * 4 + 64 for t in self.tokens)
        return text + sum(len(d.token) * 4 + 160 for d in self.deletions) + 1024

    def to_json(self, digits: int = 6) -> dict:
        """What /ablate returns (docs/api.md)."""
        return {
            "schema": ABLATION_SCHEMA,
            "model": self.model,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "next_token": self.next_token,
            "next_token_id": int(self.next_token_id),
            "p_next": round(float(self.p_next), digits),
            "exhaustive": self.exhaustive,
            "ablation": self.table(digits),
        }

    def table(self, digits: int = 6) -> list[dict]:
        return [
            {"index": d.index, "token": d.token, "p_next": round(float(d.p_next), digits),
             "delta": round(float(d.delta), digits)}
            for d in self.deletions
        ]


def positions_to_delete(analysis: Analysis) -> list[int]:
    """Every token but <BOS> for short prompts; else the MOST_ATTENDED most attended."""
    every = list(range(1, analysis.num_tokens))
    if analysis.num_tokens <= EXHAUSTIVE_MAX_TOKENS:
        return every
    attention = analysis.last_row.mean(axis=(0, 1))[1:]
    chosen = np.argsort(-attention, kind="stable")[:MOST_ATTENDED] + 1
    return sorted(int(i) for i in chosen)


def ablate(
    loaded: LoadedModel,
    analysis: Analysis,
    *,
    progress: Progress | None = None,
    run: Runner | None = None,
    batch_tokens: int | None = None,  # default: BATCH_TOKENS
) -> Ablation:
    """Delete each chosen token in turn; `analysis` is this prompt's analysis on `loaded`."""
    positions = positions_to_delete(analysis)
    p_new = p_next_without(
        loaded, analysis.token_ids.tolist(), positions, analysis.next_token_id,
        progress=progress, run=run, batch_tokens=batch_tokens,
    )
    p_orig = next((t.prob for t in analysis.top_k if t.id == analysis.next_token_id), None)
    if p_orig is None:  # not reachable while top_k starts with the argmax, but never guess
        raise ValueError("The analysis does not carry the next token's probability.")
    return Ablation(
        model=analysis.model,
        prompt=analysis.prompt,
        tokens=list(analysis.tokens),
        next_token=analysis.next_token,
        next_token_id=analysis.next_token_id,
        p_next=float(p_orig),
        deletions=[
            Deletion(j, analysis.tokens[j], float(p), float(p) - float(p_orig))
            for j, p in zip(positions, p_new)
        ],
        exhaustive=len(positions) == analysis.num_tokens - 1,
    )


def p_next_without(
    loaded: LoadedModel,
    ids: list[int],
    positions: list[int],
    next_id: int,
    *,
    progress: Progress | None = None,
    run: Runner | None = None,
    batch_tokens: int | None = None,  # default: BATCH_TOKENS
) -> np.ndarray:
    """(len(positions),) float32: P(next_id) at the last position of `ids` with each
    position deleted, in batches of at most `batch_tokens` tokens (at least one row)."""
    run = run or (lambda chunk: batch_p_next(loaded, ids, chunk, next_id))
    rows_per_batch = max(1, (batch_tokens or BATCH_TOKENS) // max(1, len(ids) - 1))
    done, total, out = 0, len(positions), []
    if progress:
        progress(0, total)
    for start in range(0, total, rows_per_batch):
        chunk = positions[start:start + rows_per_batch]
        out.append(run(chunk))
        done += len(chunk)
        if progress:
            progress(done, total)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def device_batch_tokens(loaded: LoadedModel, n_ids: int) -> int:
    """Tokens per batch for deletions of an `n_ids`-token prompt on `loaded`'s device:
    BATCH_TOKENS on the CPU; on a GPU as many rows as fit GPU_MEMORY_SHARE of its free memory,
    by a row's transient bytes in one decoder layer (eager attention's float32 scores and
    weights, and the MLP's activations: the layers run one after another)."""
    if not str(loaded.device).startswith("cuda"):
        return BATCH_TOKENS
    import torch

    config = loaded.model.config
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
    inner = int(getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 4 * hidden)
    item = torch.finfo(next(loaded.model.parameters()).dtype).bits // 8
    n = max(1, n_ids - 1)
    per_row = 2 * loaded.num_heads * n * n * 4 + n * (3 * inner + 4 * hidden) * item
    free, _ = torch.cuda.mem_get_info()
    rows = max(1, int(free * GPU_MEMORY_SHARE) // per_row)
    return rows * n


def batch_p_next(loaded: LoadedModel, ids: list[int], chunk: list[int], next_id: int) -> np.ndarray:
    """One forward pass over len(chunk) rows, row r being `ids` without position chunk[r]."""
    import torch

    full = torch.tensor(ids, device=loaded.device)
    keep = torch.ones(len(chunk), len(ids), dtype=torch.bool, device=loaded.device)
    keep[torch.arange(len(chunk)), torch.tensor(chunk)] = False
    batch = full.expand(len(chunk), -1)[keep].view(len(chunk), len(ids) - 1)
    parts = find_parts(loaded.model)
    with torch.inference_mode():
        if parts is not None:  # the decoder, then the unembedding of the last rows as the analysis does it
            logits = measures.unembed(parts, parts.base(input_ids=batch, use_cache=False).last_hidden_state[:, -1])
        else:
            try:
                logits = loaded.model(input_ids=batch, use_cache=False, logits_to_keep=1).logits[:, -1]
            except TypeError:  # a model without logits_to_keep
                logits = loaded.model(input_ids=batch, use_cache=False).logits[:, -1]
        probs = torch.softmax(logits.float(), dim=-1)[:, next_id]
    return probs.cpu().numpy().astype(np.float32)


# ---- attention against ablation ---------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """How a view's attention ranks the deleted tokens against how much deleting them hurt."""

    spearman: float | None  # rank correlation of weight and drop (ties get average ranks); None if undefined
    count: int  # tokens compared: the deleted ones
    top_attention: list[int]  # the 3 most attended of them (indices into tokens), strongest first
    top_ablation: list[int]  # the 3 whose deletion lowered P(next) most, largest drop first


def agreement(ablated: Ablation, weights: np.ndarray, k: int = 3) -> Agreement:
    """`weights`: (T,) the view's row (any measure). Drop = -delta: positive when deleting
    the token took probability away from the prediction."""
    index = np.array([d.index for d in ablated.deletions], dtype=np.int64)
    drop = -np.array([d.delta for d in ablated.deletions], dtype=np.float64)
    attn = np.asarray(weights, dtype=np.float64)[index]
    by_attn = index[np.argsort(-attn, kind="stable")][:k]
    by_drop = index[np.argsort(-drop, kind="stable")][:k]
    return Agreement(spearman(attn, drop), len(index), [int(i) for i in by_attn], [int(i) for i in by_drop])


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho: Pearson's correlation of the ranks (average ranks for ties); None
    when fewer than 2 values or either side is constant."""
    if len(x) < 2:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return None if denom == 0 else float((rx * ry).sum() / denom)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # ties share the mean of their ranks
        same = values == v
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    return ranks
