"""The result of one forward pass: plain numbers every view draws from.

Only what the views need is kept: the last query position's attention for every layer
and head (float32, exact), and full matrices (float16) only for short prompts, which is
all the all-pairs mode can draw legibly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA = "attn-analysis/1"
BOS_LABEL = "<BOS>"


@dataclass(frozen=True)
class TokenProb:
    token: str
    id: int
    prob: float


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
        if self.full is not None:
            arrays += self.full.nbytes
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
            "attention": np.round(self.last_row.astype(np.float64), digits).tolist(),
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
