"""Two prompts side by side: which tokens they share, and how each judges the other's
next token ("hungry" -> " food", "thirsty" -> " water": how likely is " water" after hungry?).

The analyses are the cached ones, so a comparison runs no forward pass of its own. The cross
probabilities come from each analysis's top-k when the other's token is there (often, for
prompts that differ by a word); otherwise from the final hidden state every analysis keeps
(`Analysis.final_hidden`, D floats): one unembedding of at most two rows, no decoder layer
(about 0.1 s for Gemma 3 270M's 262,144 x 640 unembedding on this 2-core CPU, against ~0.5 s
for a forward pass at 37 tokens). Keeping the whole next-token distribution instead would
cost 1 MiB per analysis (4.5x a cached analysis at 37 tokens), and asking the forward pass
for the other prompt's token cannot work when both are new: each needs the other's answer.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from attn.compute import measures
from attn.compute.analysis import Analysis
from attn.compute.encode import Encoded
from attn.compute.hooks import find_parts
from attn.errors import AttnError, ModelUnavailableError, PlatformError, UnknownModelError
from attn.model.loading import LoadedModel

COMPARE_SCHEMA = "attn-compare/1"

Pair = tuple[int | None, int | None]
# (rows of final hidden states (n, D) float32, one token id per row) -> (n,) probabilities.
# The engine's runner takes the model's lock and goes through the accelerator.
Unembed = Callable[[np.ndarray, list[int]], np.ndarray]


@dataclass(frozen=True)
class Comparison:
    a: Analysis
    b: Analysis
    alignment: list[Pair]  # (index into a.tokens, index into b.tokens); None: only on the other side
    p_b_of_a_next: float | None  # the probability prompt B gives to A's next token (None: not known)
    p_a_of_b_next: float | None  # the probability prompt A gives to B's next token

    @property
    def nbytes(self) -> int:
        """Memory held, for the engine cache's byte bound: both analyses count in full
        (they are cached on their own too, so this bound is on the high side)."""
        return self.a.nbytes + self.b.nbytes + 64 * len(self.alignment) + 1024

    def changed(self) -> tuple[list[int], list[int]]:
        """Indices of A's tokens with no partner in B, and of B's with none in A."""
        return ([i for i, j in self.alignment if j is None and i is not None],
                [j for i, j in self.alignment if i is None and j is not None])

    def to_json(self, digits: int = 6) -> dict:
        """What /compare returns (docs/api.md)."""
        return {
            "schema": COMPARE_SCHEMA,
            "a": self.a.to_json(digits),
            "b": self.b.to_json(digits),
            "alignment": [[i, j] for i, j in self.alignment],
            "p_b_of_a_next": _round(self.p_b_of_a_next, digits),
            "p_a_of_b_next": _round(self.p_a_of_b_next, digits),
        }


def _round(p: float | None, digits: int):
    return None if p is None else round(float(p), digits)


def align(tokens_a: list[str], tokens_b: list[str]) -> list[Pair]:
    """Shared tokens paired one to one, in order (difflib's longest matching blocks over
    the display strings); a changed or inserted token is paired with None. <BOS> (first
    on both sides) always pairs with <BOS>. Every index of each side appears once."""
    if not tokens_a or not tokens_b:
        return [(i, None) for i in range(len(tokens_a))] + [(None, j) for j in range(len(tokens_b))]
    pairs: list[Pair] = [(0, 0)]
    matcher = difflib.SequenceMatcher(None, tokens_a[1:], tokens_b[1:], autojunk=False)
    for op, i0, i1, j0, j1 in matcher.get_opcodes():
        if op == "equal":
            pairs.extend((i + 1, j + 1) for i, j in zip(range(i0, i1), range(j0, j1)))
        else:  # replace, delete, insert: A's side first, then B's
            pairs.extend((i + 1, None) for i in range(i0, i1))
            pairs.extend((None, j + 1) for j in range(j0, j1))
    return pairs


def known_prob(analysis: Analysis, token_id: int) -> float | None:
    """The probability this analysis gives to `token_id`, if its top-k holds it."""
    return next((float(t.prob) for t in analysis.top_k if t.id == token_id), None)


def cross_probs(a: Analysis, b: Analysis, unembed: Unembed | None = None) -> tuple[float | None, float | None]:
    """(P_B(A's next token), P_A(B's next token)). From the top-k where it holds the token;
    otherwise one `unembed` call over the final hidden states (rows only for what is
    missing); None where neither can tell (no unembed given, or no hidden state kept)."""
    wanted = [(b, a.next_token_id), (a, b.next_token_id)]
    found = [known_prob(who, token) for who, token in wanted]
    missing = [i for i, p in enumerate(found) if p is None and wanted[i][0].final_hidden is not None]
    if missing and unembed is not None:
        hidden = np.stack([wanted[i][0].final_hidden for i in missing]).astype(np.float32)
        probs = unembed(hidden, [wanted[i][1] for i in missing])
        for i, p in zip(missing, probs):
            found[i] = float(p)
    return found[0], found[1]


def compare(a: Analysis, b: Analysis, unembed: Unembed | None = None) -> Comparison:
    """Two analyses of the same model side by side. No forward pass."""
    if a.model != b.model:
        raise ValueError(f"Analyses of different models cannot be compared ({a.model!r}, {b.model!r}).")
    p_b_of_a, p_a_of_b = cross_probs(a, b, unembed)
    return Comparison(a=a, b=b, alignment=align(a.tokens, b.tokens), p_b_of_a_next=p_b_of_a, p_a_of_b_next=p_a_of_b)


# One side of a comparison made in one call: its analysis when it is known, else the prompt
# and its encoding to analyse; None for B: the same prompt as A.
Side = Analysis | tuple[str, Encoded] | None


@dataclass(frozen=True)
class PairOutcome:
    """What one call of `analyze_pair` sends back: the analyses it made (None: it was
    given), and the cross probabilities (None: not known)."""

    new_a: Analysis | None
    new_b: Analysis | None
    p_b_of_a_next: float | None
    p_a_of_b_next: float | None
    unembedded: bool  # whether the final hidden states went through the unembedding


def analyze_pair(loaded: LoadedModel, side_a: Side, side_b: Side) -> PairOutcome:
    """A comparison's model work in one call (one GPU request on ZeroGPU): the analyses not
    known yet, then at most one unembedding for the cross probabilities. An error about a
    prompt says which one ("Prompt B: ...")."""
    from attn.compute import forward

    def made(label: str, side: Side) -> Analysis | None:
        if side is None or isinstance(side, Analysis):
            return None
        return labelled(label, lambda: forward.forward(loaded, side[0], side[1]))

    new_a = made("A", side_a)
    a = new_a if new_a is not None else side_a
    new_b = made("B", side_b)
    b = new_b if new_b is not None else (a if side_b is None else side_b)
    unembedded = []

    def unembed(hidden: np.ndarray, token_ids: list[int]) -> np.ndarray:
        unembedded.append(len(token_ids))
        return unembed_probs(loaded, hidden, token_ids)

    p_b_of_a, p_a_of_b = cross_probs(a, b, unembed)
    return PairOutcome(new_a, new_b, p_b_of_a, p_a_of_b, bool(unembedded))


def labelled(label: str, job):
    """Run `job`; an error about its prompt comes back naming it ("Prompt B: ..."). Errors
    about the model (unknown, unavailable) or the platform concern both prompts: unchanged."""
    try:
        return job()
    except (UnknownModelError, ModelUnavailableError, PlatformError):
        raise
    except AttnError as exc:
        raise type(exc)(f"Prompt {label}: {exc}") from exc


def unembed_probs(loaded: LoadedModel, hidden: np.ndarray, token_ids: list[int]) -> np.ndarray:
    """(n,) float32: softmax(unembed(final_norm(hidden[r])))[token_ids[r]], as the model
    computes its prediction from its last layer (with Gemma's final soft-capping where the
    config has it). One (n x vocab) projection, no decoder layer."""
    import torch

    parts = find_parts(loaded.model)
    if parts is None:
        raise ValueError(f"Model {loaded.name!r}: its final norm and unembedding were not found.")
    dtype = next(loaded.model.parameters()).dtype
    with torch.inference_mode():
        h = torch.as_tensor(np.asarray(hidden, dtype=np.float32), device=loaded.device).to(dtype)[None]  # (1, n, D)
        probs = torch.softmax(measures.unembed(parts, parts.final_norm(h)[0]), dim=-1)
        rows = torch.arange(len(token_ids), device=probs.device)
        picked = probs[rows, torch.tensor(token_ids, device=probs.device)]
    return picked.cpu().numpy().astype(np.float32)
