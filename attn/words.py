"""SentencePiece pieces grouped into words, and attention summed per word.

"J" + "ide" is one word to a reader, two keys to the model. A piece starts a new word when
it begins with whitespace (the display strings keep Gemma's `▁` as a leading space, see
attn/inference.py display_tokens) or is punctuation ("don" + "'" + "t" reads "don", "'t");
<BOS> and whitespace-only pieces (newlines) are words of their own. A word's weight is the
sum of its pieces' weights, so a merged row sums to what the row summed to.
Pure functions over display strings and numpy arrays; no model, no tokenizer.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from .analysis import BOS_LABEL


def is_punctuation(piece: str) -> bool:
    """Every character is punctuation or a symbol (".", ",", "'", "?!", "$")."""
    return bool(piece) and all(unicodedata.category(ch)[0] in "PS" for ch in piece)


def groups(tokens: list[str]) -> np.ndarray:
    """(T,) int64: the word index of each token, 0, 1, ... in order (non-decreasing)."""
    out = np.zeros(len(tokens), dtype=np.int64)
    word, alone = -1, True  # `alone`: the previous piece is a word by itself
    for i, piece in enumerate(tokens):
        by_itself = (i == 0 and piece == BOS_LABEL) or piece.strip() == ""
        if alone or by_itself or piece[:1].isspace() or is_punctuation(piece.strip()):
            word += 1
        out[i] = word
        alone = by_itself
    return out


def merge(weights: np.ndarray, word_of: np.ndarray) -> np.ndarray:
    """(..., T) -> (..., W): each word's weight is the sum of its pieces' (in float64,
    returned in the input's float dtype). `word_of` is `groups(tokens)`."""
    weights = np.asarray(weights)
    word_of = np.asarray(word_of)
    if weights.shape[-1] != len(word_of):
        raise ValueError(f"{weights.shape[-1]} weights for {len(word_of)} tokens.")
    if len(word_of) == 0:
        return np.zeros(weights.shape, dtype=weights.dtype)
    starts = np.flatnonzero(np.r_[True, word_of[1:] != word_of[:-1]])
    summed = np.add.reduceat(weights.astype(np.float64), starts, axis=-1)
    return summed.astype(weights.dtype if np.issubdtype(weights.dtype, np.floating) else np.float64)


def labels(tokens: list[str], word_of: np.ndarray) -> list[str]:
    """Each word's text: its pieces' display strings joined (<BOS> stays <BOS>)."""
    out: list[str] = []
    for i, piece in enumerate(tokens):
        if i and word_of[i] == word_of[i - 1]:
            out[-1] += piece
        else:
            out.append(piece)
    return out


def spans(token_spans: list[tuple[int, int]], word_of: np.ndarray) -> list[tuple[int, int]]:
    """Each word's character span: from its first piece's start to its last piece's end."""
    out: list[tuple[int, int]] = []
    for i, (start, stop) in enumerate(token_spans):
        if i and word_of[i] == word_of[i - 1]:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out
