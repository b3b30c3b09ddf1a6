"""Prompt -> Analysis in one forward pass over [BOS] + prompt.

The logits at the last position give the next token; the attention row of that same
position is what predicted it. (The original lab ran the model twice for this.)
"""

from __future__ import annotations

import contextlib

import numpy as np

from attn.compute import measures, profiles
from attn.compute.analysis import Analysis, LensLayer, TokenProb
from attn.compute.encode import DEFAULT_MAX_TOKENS, Encoded, decode_one, encode
from attn.compute.hooks import Capture, find_parts
from attn.compute.integrity import check_integrity, row_tolerance
from attn.model.loading import LoadedModel

FULL_MATRIX_MAX_TOKENS = 128  # the all-pairs view is unreadable beyond this anyway


def analyze(
    loaded: LoadedModel,
    prompt: str,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    top_k: int = 10,
) -> Analysis:
    """Encode, then one forward pass; returns CPU numpy only (safe to pickle across processes)."""
    return forward(loaded, prompt, encode(loaded.tokenizer, prompt, max_tokens), top_k=top_k)


def forward(loaded: LoadedModel, prompt: str, encoded: Encoded, *, top_k: int = 10,
            with_profiles: bool = True) -> Analysis:
    """The one forward pass, for an already validated `encode()` result. `with_profiles`:
    reduce the head profiles inside it (False only to time what they cost)."""
    import torch

    ids, tokens, spans = encoded
    parts = find_parts(loaded.model)
    windows = [loaded.sliding_window if kind == "local" else None for kind in loaded.layer_types]
    capture = Capture(parts, hidden=True, value_norms=True, profiles=with_profiles,
                      windows=windows) if parts is not None else None
    with torch.inference_mode():
        inputs = dict(input_ids=torch.tensor([ids], device=loaded.device), output_attentions=True, use_cache=False)
        with capture or contextlib.nullcontext():
            if parts is not None:
                # The decoder alone: the prediction and the logit lens are unembedded below in
                # one (layers x vocab) projection. The unembedding (671 MB in float32 for
                # Gemma 3's 262k tokens) is memory-bound: reading it once instead of twice
                # saves ~40% of a short prompt's pass on a CPU.
                out = parts.base(**inputs)
            else:
                try:
                    # Only the last position's logits are used: skip a (T x vocab) projection
                    # that costs 2 GB and half the time at 2048 tokens.
                    out = loaded.model(**inputs, logits_to_keep=1)
                except TypeError:  # a model without logits_to_keep
                    out = loaded.model(**inputs)
        attentions = out.attentions
        check_integrity(attentions, loaded.layer_types, loaded.sliding_window, loaded.dtype)
        lens = value_norms = final_hidden = None
        if parts is not None:
            rows = out.last_hidden_state[0, -1:]  # the model's own final norm of the last layer
            if len(capture.hidden) == len(parts.layers):
                final_hidden = capture.hidden[len(parts.layers) - 1].float().cpu().numpy()
                below = torch.stack([capture.hidden[i] for i in range(len(parts.layers) - 1)])
                rows = torch.cat([parts.final_norm(below), rows])
            layer_logits = measures.unembed(parts, rows)  # (layers or 1, vocab): the lens and the prediction
            layer_probs = torch.softmax(layer_logits, dim=-1)
            logits, probs = layer_logits[-1], layer_probs[-1]  # so the lens's last layer IS the prediction
        else:
            logits = out.logits[0, -1].float()
            probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, k=min(top_k, probs.numel()))
        next_id = int(torch.argmax(logits))
        if parts is not None and len(layer_probs) == len(parts.layers):
            lens = measures.logit_lens(layer_probs, next_id)
        last_row = torch.stack([a[0, :, -1, :] for a in attentions]).float().cpu().numpy()
        full = None
        if len(ids) <= FULL_MATRIX_MAX_TOKENS:
            full = torch.stack([a[0] for a in attentions]).to(torch.float16).cpu().numpy()
        rollout = measures.rollout(attentions, row_tolerance(loaded.dtype))
        if capture is not None and len(capture.value_norms) == len(attentions):
            value_norms = measures.value_weighted(
                last_row, [capture.value_norms[i] for i in range(len(attentions))]
            )
        head_profiles = None
        if with_profiles:  # reduced in the pass; a model whose modules were not found, from its weights now
            found = capture.profiles if capture is not None else {}
            head_profiles = profiles.stack_profiles([
                found[i] if i in found else profiles.layer_profile(a[0], w)
                for i, (a, w) in enumerate(zip(attentions, windows))])
    del out, attentions, capture
    sentences = profiles.split_sentences(tokens)
    tok = loaded.tokenizer
    return Analysis(
        model=loaded.name,
        model_source=loaded.source,
        dtype=loaded.dtype,
        prompt=prompt,
        tokens=tokens,
        token_ids=np.asarray(ids, dtype=np.int64),
        spans=spans,
        next_token=decode_one(tok, next_id),
        next_token_id=next_id,
        top_k=[
            TokenProb(decode_one(tok, int(i)), int(i), float(p))
            for p, i in zip(top.values.tolist(), top.indices.tolist())
        ],
        layer_types=list(loaded.layer_types),
        sliding_window=loaded.sliding_window,
        num_heads=loaded.num_heads,
        last_row=np.ascontiguousarray(last_row, dtype=np.float32),
        full=full,
        logit_lens=None if lens is None else [
            LensLayer(decode_one(tok, int(i)), int(i), float(p), float(q)) for i, p, q in zip(*lens)
        ],
        value_norms=value_norms,
        rollout=rollout,
        final_hidden=final_hidden,
        profiles=head_profiles,
        sentences=sentences,
        sentence_share=profiles.sentence_share(last_row, sentences),
    )
