"""The modules a pass is read from (`find_parts`), and the one hook mechanism that reads
them (`Capture`).

Hooks keep only what is asked for, so nothing of size T x T is kept beyond what a pass
returns anyway: an analysis keeps each layer's last hidden state and per-key value norms;
a generation keeps each attention module's predicting row, step by step, and the value
norms of the keys each step adds. Families whose modules are not found by name (GPT-2's
fused qkv projection has no `v_proj`) get None for what needs them rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attn.compute.profiles import layer_profile


@dataclass
class Parts:
    """The modules the measures read, found by name on a transformers causal LM."""

    base: Any  # the decoder without its unembedding: returns the final-normed hidden states
    layers: list  # decoder layers, in order
    final_norm: Any  # the norm applied to the last layer's output before the unembedding
    lm_head: Any
    softcap: float | None  # Gemma's final_logit_softcapping, applied as the model applies it
    attention: list | None  # per layer, the attention module (it returns the weights), or None
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
    attns = [getattr(layer, "self_attn", None) or getattr(layer, "attn", None) for layer in layers]
    value_out = None
    if all(hasattr(a, "v_proj") and hasattr(a, "o_proj") for a in attns):
        value_out = [(a.v_proj, a.o_proj) for a in attns]
    return Parts(
        base=base,
        layers=list(layers),
        final_norm=norm,
        lm_head=head,
        softcap=getattr(config, "final_logit_softcapping", None),
        attention=None if any(a is None for a in attns) else attns,
        value_out=value_out,
        num_heads=heads,
        num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
    )


class Capture:
    """Forward hooks for passes of batch 1, as a context manager; each kind is kept only
    when asked for, layer by layer (a dict, so a layer that never ran is missing):

    - `hidden[i]`: (D,) decoder layer i's output at the last position, a copy (the (T, D) goes);
    - `value_norms[i]`: (H, T) float32 ||W_O^h v_j||_2 per head and key j of the last pass;
    - `profiles[i]`: (3, H) attention module i's head profiles, reduced from its weights as
      they appear (attn/compute/profiles.py `layer_profile`; `windows[i]`: the layer's
      sliding window, or None);
    - rows: attention module i's last query row (H, K) copied right-aligned into
      `target[i, :, :n_keys]` (`rows_into`; a local layer's cache holds only its window,
      its last keys), with `keys_seen[i]` the K of each pass and `missing` the layers
      that returned no weights. The layer's full weights are let go as soon as it returns.
    """

    def __init__(self, parts: Parts, *, hidden: bool = False, value_norms: bool = False, rows: bool = False,
                 profiles: bool = False, windows: list[int | None] | None = None):
        self.parts = parts
        self.hidden: dict[int, Any] = {}
        self.value_norms: dict[int, Any] = {}
        self.profiles: dict[int, Any] = {}
        self._profiles = profiles and parts.attention is not None
        self._windows = windows
        self.keys_seen: dict[int, list[int]] = {}
        self.missing: set[int] = set()
        self._target = None  # (layers, heads, width) tensor the next pass's rows go to
        self._n_keys = 0
        self._wanted = (hidden, value_norms and parts.value_out is not None, rows)
        self._handles: list = []

    def rows_into(self, target, n_keys: int) -> None:
        """Where the next pass's rows go: target[layer, :, :n_keys], right-aligned."""
        self._target, self._n_keys = target, n_keys

    def __enter__(self) -> "Capture":
        hidden, value_norms, rows = self._wanted
        if hidden:
            for i, layer in enumerate(self.parts.layers):
                self._handles.append(layer.register_forward_hook(self._keep_hidden(i)))
        if value_norms:
            for i, (v_proj, o_proj) in enumerate(self.parts.value_out):
                self._handles.append(v_proj.register_forward_hook(self._keep_value_norms(i, o_proj)))
        if rows:
            for i, module in enumerate(self.parts.attention):
                self._handles.append(module.register_forward_hook(self._keep_row(i)))
        if self._profiles:
            for i, module in enumerate(self.parts.attention):
                self._handles.append(module.register_forward_hook(self._keep_profile(i)))
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

    def _keep_row(self, i: int):
        def hook(module, args, out):
            weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if weights is None or weights.dim() != 4:
                self.missing.add(i)
                return
            row = weights[0, :, -1, :]  # (H, K)
            keys = row.shape[-1]
            self.keys_seen.setdefault(i, []).append(keys)
            if keys <= self._n_keys:
                self._target[i, :, self._n_keys - keys:self._n_keys] = row

        return hook

    def _keep_profile(self, i: int):
        window = self._windows[i] if self._windows else None

        def hook(module, args, out):
            weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if weights is not None and weights.dim() == 4:
                self.profiles[i] = layer_profile(weights[0].detach(), window)

        return hook
