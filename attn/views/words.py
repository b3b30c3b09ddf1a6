"""SentencePiece pieces grouped into words, and attention summed per word.

"J" + "ide" is one word to a reader, two keys to the model. A piece starts a new word when
it begins with whitespace (the display strings keep Gemma's `▁` as a leading space, see
attn/compute/forward.py display_tokens) or is punctuation ("don" + "'" + "t" reads "don", "'t");
<BOS> and whitespace-only pieces (newlines) are words of their own. A word's weight is the
sum of its pieces' weights, so a merged row sums to what the row summed to.
`merged` applies all of this to a whole Analysis, so every view draws words as it draws
pieces. Pure functions over display strings and numpy arrays; no model, no tokenizer.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

import numpy as np

from attn.compute.analysis import BOS_LABEL, Analysis
from attn.compute.profiles import sentence_share


def is_punctuation(piece: str) -> bool:
    """Every character is punctuation or a symbol (".", ",", "'", "?!", "$")."""
    return bool(piece) and all(unicodedata.category(ch)[0] in "PS" for ch in piece)


def _kind(piece: str) -> tuple[bool, bool]:
    """(alone, opens): whitespace only (a word by itself); begins a word (leading whitespace,
    punctuation, or alone)."""
    alone = piece.strip() == ""
    return alone, alone or piece[:1].isspace() or is_punctuation(piece.strip())


def groups(tokens: list[str], start: int | None = None) -> np.ndarray:
    """(T,) int64: the word index of each token, 0, 1, ... in order (non-decreasing).
    The piece at `start` (if any) begins a word whatever it reads: see `merged`."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    kinds = {piece: _kind(piece) for piece in set(tokens)}  # a prompt repeats its pieces
    alone, opens = np.array([kinds[piece] for piece in tokens], dtype=bool).T.copy()
    alone[0] |= tokens[0] == BOS_LABEL  # only the first <BOS>: typed "<BOS>" text is a word
    opens[0] = True
    opens[1:] |= alone[:-1]  # after a piece that stands alone comes a new word
    if start is not None and 0 <= start < n:
        opens[start] = True
    return np.cumsum(opens, dtype=np.int64) - 1


def merge(weights: np.ndarray, word_of: np.ndarray) -> np.ndarray:
    """(..., T) -> (..., W): each word's weight is the sum of its pieces' (in float64,
    returned in the input's float dtype). `word_of` is `groups(tokens)`."""
    weights = np.asarray(weights)
    word_of = np.asarray(word_of)
    if weights.shape[-1] != len(word_of):
        raise ValueError(f"{weights.shape[-1]} weights for {len(word_of)} tokens.")
    return _summer(word_of)(weights)


def _summer(word_of: np.ndarray):
    """weights (..., T) -> (..., W), with the word boundaries worked out once for several arrays."""
    if len(word_of) == 0:
        return lambda weights: np.zeros(weights.shape, dtype=_float(weights))
    firsts = _firsts(word_of)
    # Most words are one piece: take every word's first piece, then add the second pieces,
    # the third... (a few gathers; np.add.reduceat along the last axis costs ~3x more).
    rank = np.arange(len(word_of)) - firsts[word_of]
    rounds = [(word_of[p], p) for p in (np.flatnonzero(rank == r) for r in range(1, int(rank.max()) + 1))]

    def summed(weights: np.ndarray) -> np.ndarray:
        out = np.take(weights, firsts, axis=-1).astype(np.float64)
        for words, pieces in rounds:
            out[..., words] += np.take(weights, pieces, axis=-1)
        return out.astype(_float(weights))

    return summed


def _float(weights: np.ndarray):
    return weights.dtype if np.issubdtype(weights.dtype, np.floating) else np.float64


def labels(tokens: list[str], word_of: np.ndarray) -> list[str]:
    """Each word's text: its pieces' display strings joined (<BOS> stays <BOS>)."""
    return ["".join(tokens[a:b]) for a, b in _bounds(word_of)]


def spans(token_spans: list[tuple[int, int]], word_of: np.ndarray) -> list[tuple[int, int]]:
    """Each word's character span: from its first piece's start to its last piece's end."""
    return [(token_spans[a][0], token_spans[b - 1][1]) for a, b in _bounds(word_of)]


def _bounds(word_of: np.ndarray) -> list[tuple[int, int]]:
    """(first piece, last piece + 1) of each word."""
    firsts = _firsts(np.asarray(word_of))
    return list(zip(firsts.tolist(), firsts[1:].tolist() + [len(word_of)]))


def _firsts(word_of: np.ndarray) -> np.ndarray:
    """The index of each word's first piece."""
    if len(word_of) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, word_of[1:] != word_of[:-1]])


def merged(analysis: Analysis) -> Analysis:
    """The same analysis over words: "J" + "ide" becomes one token "Jide", its weight the
    sum of its pieces' in every layer, head and measure, so every row still sums to what it
    summed to (1 for attention and rollout). Views draw it unchanged; `words` is set so
    they say "word" where they name the unit. A merged analysis comes back as it is.

    - `full` (all pairs): keys summed per word; each word's query row is its LAST piece's,
      the position where the word is complete (and the one that predicts what follows it,
      as the last row is the prompt's last piece). Its row sums to 1 and stays causal.
    - `token_ids`: each word's first piece's id (a word has no id of its own): for
      display and identity only, never to be fed back to the model.
    - `generated_from`: the word index of the first generated piece. That piece always
      begins a word, so no word mixes typed and generated text (typed "thir" and a
      generated "sty" stay two words: the model wrote only the second).
    - The prediction, top-k, logit lens and final hidden state are the predicting
      position's, which merging does not move: kept as they are.
    - `pieces` keeps the token count, which is what a sliding window counts
      (`bos_outside_window`).
    - `sentences` become word ranges (a word holding a sentence's end closes it) and
      `sentence_share` is recomputed over them; the head `profiles` describe the model's
      pieces (a previous-token head reads the previous piece) and are kept as they are.
    - Head modes combine the merged rows: "max over heads" is each word's largest summed
      weight over heads (not a sum of per-piece maxima); value-weighted shares are summed
      raw norms over the row's unchanged total.

    Costs a few milliseconds at 2048 tokens and caches nothing: a caller may.
    """
    if analysis.words:
        return analysis
    start = analysis.generated_from  # == num_tokens at a generation's step 0: none generated yet
    word_of = groups(analysis.tokens, start)
    firsts = _firsts(word_of)
    if len(firsts) == len(word_of):  # every word is one piece: the same numbers, now words
        return replace(analysis, words=True, pieces=analysis.num_tokens)
    lasts = np.r_[firsts[1:] - 1, len(word_of) - 1]
    summed = _summer(word_of)
    last_row = summed(analysis.last_row)
    return replace(
        analysis,
        tokens=labels(analysis.tokens, word_of),
        token_ids=analysis.token_ids[firsts],
        spans=spans(analysis.spans, word_of),
        last_row=last_row,
        full=None if analysis.full is None else summed(analysis.full[:, :, lasts, :]),
        value_norms=None if analysis.value_norms is None else summed(analysis.value_norms),
        rollout=None if analysis.rollout is None else summed(analysis.rollout),
        generated_from=None if start is None else int(word_of[start]) if start < len(word_of) else len(firsts),
        words=True,
        pieces=analysis.num_tokens,
        **_sentences(analysis, word_of, last_row),
    )


def _sentences(analysis: Analysis, word_of: np.ndarray, last_row: np.ndarray) -> dict:
    """The analysis's sentences as word ranges, and their shares recomputed over the words."""
    if analysis.sentences is None:
        return {}
    ranges, end = [], 1
    for a, b in analysis.sentences:
        start, stop = max(int(word_of[a]), end), int(word_of[b - 1]) + 1
        if start < stop:
            ranges.append((start, stop))
            end = stop
    return {"sentences": ranges, "sentence_share": sentence_share(last_row, ranges)}
