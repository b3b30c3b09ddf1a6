"""Prompt -> token ids, display strings and character spans; the one rule for a valid prompt.

`check_prompt` is the prompt rule every caller applies (the engine before it loads a model,
`encode` before it tokenizes): cheap checks on the text alone. The token limit is the one
rule that needs the tokenizer, so `encode` applies it after tokenizing.
"""

from __future__ import annotations

from typing import NamedTuple

from attn.compute.analysis import BOS_LABEL
from attn.errors import PromptError
from attn.settings import MAX_TOKENS

DEFAULT_MAX_TOKENS = MAX_TOKENS
MAX_CHARS_PER_TOKEN = 100  # reject absurd inputs before paying for tokenization


class Encoded(NamedTuple):
    """A prompt as the model reads it (a tuple, so `ids, tokens, spans = encode(...)` reads)."""

    ids: list[int]  # (T,) token ids, [BOS] first
    tokens: list[str]  # (T,) display strings, "<BOS>" first
    spans: list[tuple[int, int]]  # (T,) character span of each token in the prompt; BOS is (0, 0)


def check_prompt(prompt, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
    """Raises PromptError for what no tokenizer can fix: not text, empty, unpaired
    surrogates, or more characters than `max_tokens` tokens could ever hold."""
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


def bos_id(tokenizer) -> int:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise PromptError("This tokenizer has no BOS (or EOS) token to start the sequence with.")


def encode(tokenizer, prompt: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> Encoded:
    """Token ids ([BOS] first), display strings and character spans for `prompt`.

    Special-token text typed by a user ("<bos>", "<start_of_turn>") is split like any
    other text: it must never act as a control token.
    """
    check_prompt(prompt, max_tokens)
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
    return Encoded(ids, display_tokens(tokenizer, ids), contiguous_spans(enc["offset_mapping"], len(prompt)))


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
    """One token's display string, as `display_tokens` shows it."""
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return text if text and "\ufffd" not in text else str(tokenizer.convert_ids_to_tokens(token_id))
