"""Gemma's tokenizer written from a GGUF's vocabulary, as tokenizer.json text.

Where transformers' converter re-derives the BPE merges with full sorts and then builds and
serialises a Rust tokenizer (see attn/model/gguf.py), the merges here follow from the
vocabulary's order alone (`merges`) and the JSON is written as text, nothing built;
tests/test_convert.py checks it equals transformers' own.
"""

from __future__ import annotations

import json

SPACE = "\u2581"  # sentencepiece's word boundary
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4  # llama.cpp's token types


def _spelled(tokens: list[str]) -> list[str]:
    # Gemma files store a token of two or more spaces as real spaces; the tokenizer
    # looks them up as "▁▁".
    return [SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]


def merges(tokens: list[str]) -> list[list[str]]:
    """The BPE merges Gemma's vocabulary implies, best first.

    Every way of cutting a token into two vocabulary tokens is a merge. Gemma's merge
    rank is the token's position in the file (not its score); a token's own cuts come
    longest left part first. A token listed twice takes its last position.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    out = []
    extend = out.extend
    for token in sorted(vocab, key=vocab.__getitem__):
        n = len(token)
        if n > 1:
            extend(
                [token[:i], token[i:]]
                for i in range(n - 1, 0, -1)
                if token[:i] in vocab and token[i:] in vocab
            )
    return out


def _added(token_id: int, content: str, special: bool) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def tokenizer_files(md: dict) -> tuple[str, dict]:
    """(tokenizer.json text, tokenizer_config.json dict) for Gemma's sentencepiece BPE, from
    a GGUF's metadata: spaces become ▁, byte fallback, control tokens kept whole, <bos>
    added first."""
    stored = md["tokenizer.ggml.tokens"]
    tokens = _spelled(stored)
    vocab = {t: i for i, t in enumerate(tokens)}
    types = md.get("tokenizer.ggml.token_type")
    types = [] if types is None else types.tolist()

    def name(key: str) -> str:
        return tokens[md[f"tokenizer.ggml.{key}"]]

    bos = name("bos_token_id")
    # Control and user-defined tokens stay whole, looked up as the file spells them (so
    # the runs of spaces, respelled above, are not among them).
    added = [
        _added(vocab[t], t, kind == _TOKEN_CONTROL)
        for t, kind in zip(stored, types)
        if kind in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED) and t in vocab
    ]
    added.sort(key=lambda entry: entry["id"])
    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", True))
    if add_bos:
        bos_id = md["tokenizer.ggml.bos_token_id"]
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        }
    else:
        post = None
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False},
        "post_processor": post,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": name("unknown_token_id"),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges(tokens),
        },
    }
    settings = {
        "backend": "tokenizers",
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": bos,
        "eos_token": name("eos_token_id"),
        "unk_token": name("unknown_token_id"),
        "pad_token": name("padding_token_id"),
        "mask_token": "<mask>",
        "model_max_length": 1000000000000000019884624838656,  # transformers' "no limit"
    }
    return json.dumps(document, ensure_ascii=False), settings
