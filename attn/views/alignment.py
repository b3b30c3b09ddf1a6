"""An alignment of two prompts' tokens, as the comparison draws it, checked, and the
weights of one view along it.

An alignment pairs the tokens in order: (i, j) indexes a.tokens and b.tokens and the two
strings are equal; (i, None) is a token only A has, (None, j) one only B has; the first
pair is (0, 0), <BOS> with <BOS>. attn/compute/compare.py makes one (`align`); the views
only draw from it.
"""

from __future__ import annotations

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.view import View, check_view, row

Alignment = list[tuple[int | None, int | None]]


def check_alignment(a: Analysis, b: Analysis, alignment: Alignment) -> None:
    """Raise ValueError unless the alignment covers both prompts' tokens once each, in
    order, starts with <BOS> paired with <BOS>, and pairs only equal tokens."""
    if not alignment or tuple(alignment[0]) != (0, 0):
        raise ValueError("An alignment starts with (0, 0): <BOS> paired with <BOS>.")
    seen_a, seen_b = [], []
    for i, j in alignment:
        if i is None and j is None:
            raise ValueError("An alignment entry needs a token on at least one side.")
        if i is not None and j is not None and a.tokens[i] != b.tokens[j]:
            raise ValueError(f"Entry ({i}, {j}) pairs different tokens: {a.tokens[i]!r} and {b.tokens[j]!r}.")
        if i is not None:
            seen_a.append(i)
        if j is not None:
            seen_b.append(j)
    if seen_a != list(range(a.num_tokens)) or seen_b != list(range(b.num_tokens)):
        raise ValueError("An alignment lists every token of both prompts exactly once, in order.")


def aligned_weights(a: Analysis, b: Analysis, alignment: Alignment, view: View) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's weights (the view's row) per alignment entry; 0 on the side without the token."""
    view = check_view(a, view)
    check_view(b, view)
    check_alignment(a, b, alignment)
    wa, wb = row(a, view), row(b, view)
    out_a = np.array([0.0 if i is None else float(wa[i]) for i, _ in alignment])
    out_b = np.array([0.0 if j is None else float(wb[j]) for _, j in alignment])
    return out_a, out_b
