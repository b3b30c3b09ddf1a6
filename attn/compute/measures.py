"""Three measures read from the analysis's own forward pass, beyond the raw weights.

- Logit lens (nostalgebraist 2020): each layer's residual stream at the predicting
  position, put through the model's final norm and unembedding.
- Value-weighted attention (Kobayashi et al. 2020, "Attention is not only a weight"):
  ||a[l,h,t,j] * W_O^h v_j||_2, how far key j actually moves head h's output.
- Attention rollout (Abnar & Zuidema 2020): attention traced through every layer,
  with the residual connection as half an identity.

Hooks keep only what these need (position t's hidden state per layer, per-head value
norms per key), so nothing of size T x T is kept beyond what the pass returns anyway.
Families whose modules are not found by name (GPT-2's fused qkv projection has no
`v_proj`) get None for that measure rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attn.errors import IntegrityError

@dataclass
class Parts:
    """The modules the measures read, found by name on a transformers causal LM."""

    base: Any  # the decoder without its unembedding: returns the final-normed hidden states
    layers: list  # decoder layers, in order
    final_norm: Any  # the norm applied to the last layer's output before the unembedding
    lm_head: Any
    softcap: float | None  # Gemma's final_logit_softcapping, applied as the model applies it
    value_out: list[tuple[Any, Any]] | None  # per layer (v_proj, o_proj), or None
    num_heads: int
    num_kv_heads: int


def find_parts(model) -> Parts | None:
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        return None
    config = model.config
    heads = int(config.num_attention_heads)
    attns = [getattr(layer, "self_attn", None) for layer in layers]
    value_out = None
    if all(hasattr(a, "v_proj") and hasattr(a, "o_proj") for a in attns):
        value_out = [(a.v_proj, a.o_proj) for a in attns]
    return Parts(
        base=base,
        layers=list(layers),
        final_norm=norm,
        lm_head=head,
        softcap=getattr(config, "final_logit_softcapping", None),
        value_out=value_out,
        num_heads=heads,
        num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
    )


class Capture:
    """Forward hooks for one pass of batch 1: the last position's hidden state after each
    decoder layer, and ||W_O^h v_j||_2 per head and key from each value projection."""

    def __init__(self, parts: Parts):
        self.parts = parts
        self.hidden: dict[int, Any] = {}
        self.value_norms: dict[int, Any] = {}
        self._handles: list = []

    def __enter__(self) -> "Capture":
        for i, layer in enumerate(self.parts.layers):
            self._handles.append(layer.register_forward_hook(self._keep_hidden(i)))
        for i, (v_proj, o_proj) in enumerate(self.parts.value_out or []):
            self._handles.append(v_proj.register_forward_hook(self._keep_value_norms(i, o_proj)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keep_hidden(self, i: int):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            self.hidden[i] = out[0, -1].detach().clone()  # (D,): a copy, so the (T, D) can go

        return hook

    def _keep_value_norms(self, i: int, o_proj):
        heads, kv_heads = self.parts.num_heads, self.parts.num_kv_heads

        def hook(module, args, out):
            import torch

            length = out.shape[1]
            v = out[0].detach().float().reshape(length, kv_heads, -1)  # (T, KV, d)
            d = v.shape[-1]
            w = o_proj.weight.detach().float().reshape(-1, heads, d)  # (D, H, d): columns h*d:(h+1)*d
            # Query head h reads kv head h // (H / KV), as repeat_kv does.
            v = v[:, torch.arange(heads, device=v.device) // (heads // kv_heads)]  # (T, H, d)
            self.value_norms[i] = torch.linalg.vector_norm(
                torch.einsum("thd,ehd->hte", v, w), dim=-1
            )  # (H, T)

        return hook


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
