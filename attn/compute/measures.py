"""Three measures read from the analysis's own forward pass, beyond the raw weights.

- Logit lens (nostalgebraist 2020): each layer's residual stream at the predicting
  position, put through the model's final norm and unembedding.
- Value-weighted attention (Kobayashi et al. 2020, "Attention is not only a weight"):
  ||a[l,h,t,j] * W_O^h v_j||_2, how far key j actually moves head h's output.
- Attention rollout (Abnar & Zuidema 2020): attention traced through every layer,
  with the residual connection as half an identity.

The inputs come from the pass's hooks (attn/compute/hooks.py: each layer's hidden state
at the predicting position, per-head value norms per key); this module holds the maths.
"""

from __future__ import annotations

import numpy as np

from attn.compute.hooks import Parts
from attn.errors import IntegrityError

UNEMBED_BLOCK = 2048  # vocabulary rows per block: 5 MB of float32 Gemma 3 weights, cache-sized


def unembed(parts: Parts, normed):
    """(n, vocab) float32 logits of n final-normed residual-stream rows (n, D): the model's
    own unembedding and (Gemma) soft-capping.

    On a CPU the (vocab x D) weight is multiplied a block of rows at a time: for a few rows
    (the logit lens's 18) one `linear` call is no longer a single read of the weight, and
    blocks of 2,048 rows took half its time here (137 vs 271 ms for 18 rows of Gemma 3,
    2 cores), the same numbers to the bit in that measurement."""
    import torch

    head = parts.lm_head
    if normed.device.type == "cpu" and isinstance(head, torch.nn.Linear) and head.bias is None:
        w = head.weight
        out = torch.empty(w.shape[0], normed.shape[0], dtype=w.dtype)
        for i in range(0, w.shape[0], UNEMBED_BLOCK):
            torch.mm(w[i:i + UNEMBED_BLOCK], normed.T, out=out[i:i + UNEMBED_BLOCK])
        logits = out.T.float()
    else:
        logits = head(normed).float()
    if parts.softcap is not None:
        logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits


def logit_lens(probs, next_id: int):
    """(top ids (L,), top probs (L,), p_next (L,)) as int64/float32 numpy, from each layer's
    next-token distribution (L, vocab): the last row is the prediction itself."""
    top_p, top_id = probs.max(dim=-1)
    return (
        top_id.cpu().numpy().astype(np.int64),
        top_p.cpu().numpy().astype(np.float32),
        probs[:, next_id].cpu().numpy().astype(np.float32),
    )


def rollout(attentions, row_tol: float) -> np.ndarray:
    """Last row of A^_{L-1} ... A^_0, A^_l = 0.5 mean_h(A_l) + 0.5 I, as a row vector times
    each layer's matrix from the last layer down: L vector-matrix products, no T x T kept.

    Every A^ row sums to 1 within `row_tol` / 2 (the integrity check saw to A's rows), so
    the result sums to 1 within L * row_tol; anything further is an arithmetic error.
    """
    import torch

    first = attentions[0]
    length = first.shape[-1]
    r = torch.zeros(length, dtype=torch.float32, device=first.device)
    r[-1] = 1.0
    for att in reversed(attentions):
        r = 0.5 * torch.matmul(r, att[0].float()).mean(dim=0) + 0.5 * r
    total = float(r.sum())
    if not abs(total - 1) <= len(attentions) * row_tol:
        raise IntegrityError(f"Attention rollout sums to {total:.6f}, not 1.")
    return r.cpu().numpy().astype(np.float32)


def value_weighted(last_row: np.ndarray, norms: list) -> np.ndarray:
    """(layers, heads, T) float32: a[l,h,t,j] * ||W_O^h v_j||; a >= 0, so the scalar
    comes out of the norm."""
    import torch

    per_key = torch.stack(norms).cpu().numpy().astype(np.float32)
    return np.ascontiguousarray(last_row * per_key, dtype=np.float32)
