"""The result of one forward pass: plain numbers every view draws from.

Only what the views need is kept: the last query position's attention for every layer
and head (float32, exact), and full matrices (float16) only for short prompts, which is
all the all-pairs mode can draw legibly. Three measures from the same pass read the
prediction differently: the logit lens (what each layer would predict), value-weighted
attention (how much each key's value moves the output) and attention rollout (attention
traced through all layers); see attn/measures.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA = "attn-analysis/2"  # /1 plus logit_lens, value_norms, rollout
BOS_LABEL = "<BOS>"


@dataclass(frozen=True)
class TokenProb:
    token: str
    id: int
    prob: float


@dataclass(frozen=True)
class LensLayer:
    """One layer's logit-lens reading at the predicting position (nostalgebraist 2020)."""

    token: str  # the layer's top token, display string
    id: int
    prob: float  # its probability
    p_next: float  # the probability this layer gives to the model's final next token


@dataclass(frozen=True)
class Analysis:
    model: str
    model_source: str
    dtype: str
    prompt: str
    tokens: list[str]  # display strings, BOS first
    token_ids: np.ndarray  # (T,) int64
    spans: list[tuple[int, int]]  # character span of each token in `prompt`; BOS is (0, 0)
    next_token: str
    next_token_id: int
    top_k: list[TokenProb]
    layer_types: list[str]  # "global" | "local", per layer
    sliding_window: int | None
    num_heads: int
    last_row: np.ndarray  # (layers, heads, T) float32: attention of the predicting position
    full: np.ndarray | None  # (layers, heads, T, T) float16, or None for long prompts
    # The measures (attn/measures.py); None where a model family does not expose the modules.
    logit_lens: list[LensLayer] | None = None  # one per layer; the last equals the prediction
    value_norms: np.ndarray | None = None  # (layers, heads, T) float32: ||a[l,h,t,j] W_O^h v_j||_2, raw
    rollout: np.ndarray | None = None  # (T,) float32: last row of the rolled-out attention, sums to 1

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the cache's byte bound."""
        text = len(self.prompt) * 4 + sum(len(t) * 4 + 64 for t in self.tokens)
        arrays = self.last_row.nbytes + self.token_ids.nbytes
        for extra in (self.full, self.value_norms, self.rollout):
            if extra is not None:
                arrays += extra.nbytes
        if self.logit_lens is not None:
            text += sum(len(g.token) * 4 + 160 for g in self.logit_lens)
        return arrays + text + 96 * len(self.spans) + 1024

    def to_json(self, digits: int = 6) -> dict:
        """The JSON schema shared by the CLI's --json and the web API (see README)."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "model_source": self.model_source,
            "dtype": self.dtype,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": [int(i) for i in self.token_ids],
            "spans": [list(s) for s in self.spans],
            "next_token": self.next_token,
            "next_token_id": int(self.next_token_id),
            "top_k": [
                {"token": t.token, "id": int(t.id), "prob": round(float(t.prob), digits)}
                for t in self.top_k
            ],
            "num_layers": self.num_layers,
            "num_heads": int(self.num_heads),
            "layer_types": list(self.layer_types),
            "sliding_window": self.sliding_window,
            "attention": _rounded(self.last_row, digits),
            "logit_lens": None if self.logit_lens is None else [
                {"token": g.token, "id": int(g.id), "prob": round(float(g.prob), digits),
                 "p_next": round(float(g.p_next), digits)}
                for g in self.logit_lens
            ],
            "value_norms": _rounded(self.value_norms, digits),
            "rollout": _rounded(self.rollout, digits),
        }

    # ---- layer facts ------------------------------------------------------------------
    def is_local(self, layer: int) -> bool:
        """A sliding-window layer: it sees only the last `sliding_window` tokens."""
        return self.layer_types[layer] == "local"

    def layer_kind(self, layer: int) -> str:
        """'global', or 'local (sliding window 512)'."""
        kind = self.layer_types[layer]
        if kind == "local" and self.sliding_window:
            return f"local (sliding window {self.sliding_window})"
        return kind

    def bos_outside_window(self, layer: int) -> bool:
        """This layer is local and the prompt is longer than its window: <BOS> is out of
        its sight for the predicting position."""
        return self.is_local(layer) and bool(self.sliding_window) and self.num_tokens > self.sliding_window


def _rounded(values: np.ndarray | None, digits: int):
    return None if values is None else np.round(values.astype(np.float64), digits).tolist()
