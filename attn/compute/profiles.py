"""Head profiles and attention per sentence: the lab's questions answered with numbers.

The definitions are exact (docs/lessons.md#definitions). A is the softmax attention
[layer][head][query i][key j] over [<BOS>] + prompt, T positions, <BOS> at 0:

- bos[l, h]      = mean over i in 1..T-1 of A[l,h,i,0]: how much a head parks on <BOS>;
- previous[l, h] = mean over i in 2..T-1 of A[l,h,i,i-1]: a previous-token head
                   (NaN for a one-token prompt, where no i has a previous prompt token);
- entropy[l, h]  = mean over i in 1..T-1 of -sum_j A[l,h,i,j] ln A[l,h,i,j], in nats, 0 ln 0 = 0.

The profiles are reduced inside the forward pass, one layer at a time as its weights appear
(attn/compute/hooks.py, `Capture(profiles=True)`), a block of query rows at a time, reading
only the keys a row can see: nothing T x T is kept or made.

Sentences: the prompt is cut after every token whose text, stripped, ends in ".", "!" or
"?"; what follows the last cut is the last sentence (an empty tail is dropped).
sentence_share[l, s] is the last position's attention (mean over heads) on sentence s,
leaving out <BOS> and renormalised: sum over j in s of mean_h A[l,h,T-1,j] / (1 - mean_h A[l,h,T-1,0]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROFILE_KINDS = ("bos", "previous", "entropy")
SENTENCE_ENDS = (".", "!", "?")
PROFILE_ROWS = 128  # query rows reduced at a time on a CPU: a (heads, 128, keys) float32 block at most
PROFILE_ROWS_GPU = 1024  # on a GPU: fewer, larger kernels (4 x 1024 x 2048 float32 is 32 MiB)


@dataclass(frozen=True)
class Profiles:
    """Per layer and head, over every query position of the pass (definitions above)."""

    bos: np.ndarray  # (layers, heads) float32, in [0, 1]
    previous: np.ndarray  # (layers, heads) float32, in [0, 1]; NaN when T < 3
    entropy: np.ndarray  # (layers, heads) float32, nats, >= 0

    def of(self, kind: str) -> np.ndarray:
        """One profile by name ('bos', 'previous', 'entropy')."""
        if kind not in PROFILE_KINDS:
            raise ValueError(f"Unknown profile {kind!r}; one of {', '.join(PROFILE_KINDS)}.")
        return getattr(self, kind)

    @property
    def nbytes(self) -> int:
        return self.bos.nbytes + self.previous.nbytes + self.entropy.nbytes

    def to_json(self, digits: int = 6) -> dict:
        return {kind: _rounded(self.of(kind), digits) for kind in PROFILE_KINDS}


def layer_profile(weights, window: int | None = None):
    """One layer's (heads, T, T) softmax weights -> a (3, heads) float32 tensor: its heads'
    bos, previous and entropy. The entropy reads, a block of query rows at a time in
    float32, only the keys those rows can see: up to the row (causal) and, in a local
    layer, no further back than its `window` (the integrity check holds the rest at 0)."""
    import torch

    heads, n, _ = weights.shape
    nan = weights.new_full((heads,), float("nan"), dtype=torch.float32)
    bos = weights[:, 1:, 0].float().mean(dim=-1) if n > 1 else nan
    diagonal = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)  # A[i, i-1] for i = 1..T-1
    previous = diagonal[:, 1:].float().mean(dim=-1) if n > 2 else nan
    total = weights.new_zeros(heads, dtype=torch.float32)  # the entropy summed over rows
    rows = PROFILE_ROWS if weights.device.type == "cpu" else PROFILE_ROWS_GPU
    for r0 in range(1, n, rows):  # row 0 (<BOS>) is left out: its entropy is 0 anyway
        r1 = min(r0 + rows, n)
        k0 = max(0, r0 - window + 1) if window else 0  # row i sees keys j > i - window
        block = weights[:, r0:r1, k0:r1].float()
        total += torch.special.entr(block).sum(dim=(1, 2))  # -x ln x, 0 at 0 (twice xlogy's speed here)
    entropy = total / (n - 1) if n > 1 else nan
    return torch.stack([bos, previous, entropy])


def stack_profiles(per_layer: list) -> Profiles:
    """Profiles from each layer's `layer_profile`, in layer order."""
    import torch

    values = torch.stack(per_layer).cpu().numpy().astype(np.float32)  # (layers, 3, heads)
    return Profiles(*(np.ascontiguousarray(values[:, k]) for k in range(3)))


def ends_sentence(token: str) -> bool:
    """The token's text, stripped, ends in '.', '!' or '?'."""
    return token.strip().endswith(SENTENCE_ENDS)


def split_sentences(tokens: list[str]) -> list[tuple[int, int]]:
    """[start, end) token ranges over positions 1..T-1 of `tokens` (display strings, <BOS>
    first): cut after every token that ends a sentence; a non-empty tail is the last."""
    sentences, start = [], 1
    for i in range(1, len(tokens)):
        if ends_sentence(tokens[i]):
            sentences.append((start, i + 1))
            start = i + 1
    if start < len(tokens):
        sentences.append((start, len(tokens)))
    return sentences


def sentence_share(last_row: np.ndarray, sentences: list[tuple[int, int]]) -> np.ndarray:
    """(layers, sentences) float32 from the predicting position's (layers, heads, T) row:
    each sentence's share of the attention that does not go to <BOS>. NaN in a layer whose
    heads put all their weight on <BOS> (nothing is left to share)."""
    mean = np.asarray(last_row, dtype=np.float64).mean(axis=1)  # (layers, T)
    rest = 1.0 - mean[:, 0]
    sums = np.stack([mean[:, a:b].sum(axis=1) for a, b in sentences], axis=1) if sentences else \
        np.zeros((mean.shape[0], 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rest[:, None] > 0, sums / rest[:, None], np.nan)
    return np.ascontiguousarray(share, dtype=np.float32)


def uniform_entropy(num_tokens: int) -> float:
    """The entropy profile of attention spread evenly over every visible key: mean over
    i in 1..T-1 of ln(i + 1) = ln(T!) / (T - 1). No head of a causal layer exceeds it."""
    return math.lgamma(num_tokens + 1) / (num_tokens - 1) if num_tokens > 1 else 0.0


def profile_similarity(a: Profiles, a_tokens: int, b: Profiles, b_tokens: int) -> np.ndarray:
    """(layers,) float64 in [0, 1]: how alike two prompts' head profiles are, layer by layer.

    similarity[l] = 1 - mean over heads h and the three profiles of |x_A[l,h] - x_B[l,h]|, with
    bos and previous as they are (in [0, 1]) and entropy divided by `uniform_entropy(T)` of its
    own prompt (so in [0, 1] too). A profile with no value (previous, one-token prompt) is
    left out of the mean. 1: every head of the layer behaves the same on both prompts."""
    diffs = [np.abs(a.bos.astype(np.float64) - b.bos), np.abs(a.previous.astype(np.float64) - b.previous),
             np.abs(a.entropy / uniform_entropy(a_tokens) - b.entropy / uniform_entropy(b_tokens))]
    stacked = np.stack(diffs, axis=-1).reshape(len(a.bos), -1)  # (layers, heads * 3)
    return 1.0 - np.nanmean(stacked, axis=1)


def sentences_of(analysis) -> tuple[list[tuple[int, int]], np.ndarray]:
    """An analysis's sentences and shares: its own, or (a generation's step, which keeps
    none) made now from its tokens and predicting row, by the same rules."""
    if analysis.sentences is not None and analysis.sentence_share is not None:
        return analysis.sentences, analysis.sentence_share
    sentences = split_sentences(analysis.tokens)
    return sentences, sentence_share(analysis.last_row, sentences)


def _rounded(values: np.ndarray, digits: int) -> list:
    """Nested lists, NaN as None (JSON has no NaN)."""
    out = np.round(values.astype(np.float64), digits)
    return [[None if np.isnan(v) else float(v) for v in row] for row in out]
