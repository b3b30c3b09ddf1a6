"""Prompt -> Analysis in one forward pass over [BOS] + prompt.

The logits at the last position give the next token; the attention row of that same
position is what predicted it. (The original lab ran the model twice for this.)
"""

from __future__ import annotations

import contextlib

import numpy as np

from attn.compute import measures
from attn.compute.analysis import BOS_LABEL, Analysis, LensLayer, TokenProb
from attn.errors import IntegrityError, PromptError
from attn.model.loading import LoadedModel
from attn.settings import MAX_TOKENS

DEFAULT_MAX_TOKENS = MAX_TOKENS
FULL_MATRIX_MAX_TOKENS = 128  # the all-pairs view is unreadable beyond this anyway
MAX_CHARS_PER_TOKEN = 100  # reject absurd inputs before paying for tokenization
ROW_SUM_TOL = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 2e-2, "float16": 1e-2}


def bos_id(tokenizer) -> int:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise PromptError("This tokenizer has no BOS (or EOS) token to start the sequence with.")


def encode(tokenizer, prompt: str, max_tokens: int = DEFAULT_MAX_TOKENS):
    """Token ids ([BOS] first), display strings and character spans for `prompt`.

    Special-token text typed by a user ("<bos>", "<start_of_turn>") is split like any
    other text: it must never act as a control token.
    """
    if not isinstance(prompt, str):
        raise PromptError("The prompt must be text.")
    if not prompt.strip():
        raise PromptError("The prompt is empty: type some text to analyse.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: JSON can carry them, the tokenizer cannot
        raise PromptError("The prompt contains invalid characters (unpaired surrogates).") from None
    if len(prompt) > max_tokens * MAX_CHARS_PER_TOKEN:
        raise PromptError(
            f"The prompt is too long ({len(prompt):,} characters); the limit is {max_tokens:,} tokens."
        )
    enc = tokenizer(
        prompt,
        add_special_tokens=False,
        return_offsets_mapping=True,
        split_special_tokens=True,
    )
    body = list(enc["input_ids"])
    if not body:
        raise PromptError("The prompt produced no tokens: type some text to analyse.")
    ids = [bos_id(tokenizer)] + body
    if len(ids) > max_tokens:
        raise PromptError(
            f"The prompt is {len(ids):,} tokens long (with <BOS>); the limit is {max_tokens:,} tokens."
        )
    return ids, display_tokens(tokenizer, ids), contiguous_spans(enc["offset_mapping"], len(prompt))


def contiguous_spans(offsets, length: int) -> list[tuple[int, int]]:
    """Character spans that tile the prompt exactly: gaps (e.g. trimmed spaces) join the
    following token, as Gemma's own `▁` convention does. BOS gets the empty span (0, 0)."""
    spans = [(0, 0)]
    end = 0
    for _, stop in offsets:
        start, end = end, min(max(end, int(stop)), length)
        spans.append((start, end))
    if len(spans) > 1:
        spans[-1] = (spans[-1][0], length)
    return spans


def display_tokens(tokenizer, ids: list[int]) -> list[str]:
    """What a person should read for each token: the decoded text (`▁` becomes a space);
    byte-fallback pieces that are not valid text on their own keep their raw name."""
    texts = tokenizer.batch_decode([[i] for i in ids[1:]], clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids[1:])
    shown = [t if t and "\ufffd" not in t else str(p) for t, p in zip(texts, pieces)]
    return [BOS_LABEL] + shown


def decode_one(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return text if text and "\ufffd" not in text else str(tokenizer.convert_ids_to_tokens(token_id))


def analyze(
    loaded: LoadedModel,
    prompt: str,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    top_k: int = 10,
) -> Analysis:
    """Encode, then one forward pass; returns CPU numpy only (safe to pickle across processes)."""
    return forward(loaded, prompt, encode(loaded.tokenizer, prompt, max_tokens), top_k=top_k)


def forward(loaded: LoadedModel, prompt: str, encoded, *, top_k: int = 10) -> Analysis:
    """The one forward pass, for an already validated `encode()` result."""
    import torch

    ids, tokens, spans = encoded
    parts = measures.find_parts(loaded.model)
    capture = measures.Capture(parts) if parts is not None else None
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
        rollout = measures.rollout(attentions, ROW_SUM_TOL.get(loaded.dtype, 1e-3))
        if capture is not None and len(capture.value_norms) == len(attentions):
            value_norms = measures.value_weighted(
                last_row, [capture.value_norms[i] for i in range(len(attentions))]
            )
    del out, attentions, capture
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
    )


def check_integrity(attentions, layer_types, window, dtype: str) -> None:
    """Softmax rows sum to 1; nothing attends to the future; local layers see only their
    window. Any breach means the numbers are not attention weights, so none are shown."""
    import torch

    if len(attentions) != len(layer_types):
        raise IntegrityError(
            f"Expected attention for {len(layer_types)} layers, got {len(attentions)}."
        )
    tol = ROW_SUM_TOL.get(dtype, 1e-3)
    # One host sync for all layers (on a GPU a sync per check costs more than the checks),
    # and each weight read about once: at 2048 tokens these checks cost more than
    # half the forward pass when written as full-matrix triu/tril/isfinite copies.
    checks = []
    for att, kind in zip(attentions, layer_types):
        a = att[0]
        sums = a.sum(dim=-1, dtype=torch.float32)  # NaN or infinity anywhere shows in its row's sum
        future, beyond = _outside_band(a, window if kind == "local" else None)
        checks.append(torch.stack([
            (~torch.isfinite(sums)).any().float(),
            (sums - 1).abs().max(),
            future.float(),
            beyond.float(),
        ]))
    for layer, (nonfinite, err, future, outside) in enumerate(torch.stack(checks).tolist()):
        if nonfinite:
            raise IntegrityError(f"Layer {layer}: attention contains NaN or infinity.")
        if not err <= tol:
            raise IntegrityError(f"Layer {layer}: attention rows sum to 1 ± {err:.2e} (tolerance {tol}).")
        if future:
            raise IntegrityError(f"Layer {layer}: a token attends to a later token (causal mask broken).")
        if outside:
            raise IntegrityError(
                f"Layer {layer}: a local layer attends beyond its {window}-token window."
            )


CHECK_ROWS = 256


def _outside_band(a, window: int | None):
    """(any weight on a later token, any weight `window` or more tokens back), reading
    only the cells that must be zero, a block of query rows at a time."""
    import torch

    n = a.shape[-1]
    future, beyond = [a.new_zeros((), dtype=torch.bool)], [a.new_zeros((), dtype=torch.bool)]
    for r0 in range(0, n, CHECK_ROWS):
        r1 = min(r0 + CHECK_ROWS, n)
        # Row i, key j > i; in this block, column c = j - (r0 + 1), so the cells with c >= i - r0.
        future.append(torch.triu(a[:, r0:r1, r0 + 1:]).any())
        if window and r1 - 1 >= window:
            lo = max(r0, window)
            # Row i, key j <= i - window: in this block, j - (i - lo) <= lo - window.
            beyond.append(torch.tril(a[:, lo:r1, : r1 - window], diagonal=lo - window).any())
    return torch.stack(future).any(), torch.stack(beyond).any()
