"""The benchmark's prompts: the artist passage, sized copies of it, same-length variants.

bench/gpu.py uses them too.
"""

from __future__ import annotations

import json
from itertools import cycle, islice

from bench.common import BUNDLED, ROOT

EXAMPLES = json.loads((ROOT / "examples.json").read_text(encoding="utf-8"))
ARTIST = next(e["prompt"] for e in EXAMPLES if e["name"] == "Artist passage")
PRESET_LAYER = next(e["layer"][BUNDLED] for e in EXAMPLES if e["name"] == "Artist passage")


# One word varied at a time keeps the token count (checked) and defeats every cache.
COLOURS = ["red", "green", "yellow", "purple", "orange", "pink", "gray", "brown", "white", "black",
           "gold", "silver", "violet", "teal", "crimson", "amber", "ivory", "navy", "olive", "blue"]
NOUNS = ["waves", "clouds", "trees", "hills", "birds", "boats", "rocks", "stars", "flowers", "fields",
         "mountains", "rivers", "horses", "houses", "ships", "leaves", "roses", "cliffs", "lakes", "sky"]
ADJECTIVES = ["steady", "calm", "firm", "careful", "gentle", "quick", "patient", "light"]


def n_tokens(tokenizer, prompt: str) -> int:
    from attn.compute.encode import encode

    return len(encode(tokenizer, prompt, max_tokens=10**7)[0])


def sized_prompt(tokenizer, target: int) -> str:
    """The artist passage repeated, cut at a word so that [BOS] + prompt is at most
    `target` tokens (as close as the word boundaries allow)."""
    words = ARTIST.split(" ")

    def text(k: int) -> str:
        return " ".join(islice(cycle(words), k))

    lo, hi = 1, target  # each word is at least one token
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_tokens(tokenizer, text(mid)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


def artist_variants(tokenizer):
    """Distinct prompts with the artist passage's token count (up to three words varied)."""
    base = n_tokens(tokenizer, ARTIST)
    seen = {ARTIST}
    for adverb in ADJECTIVES:
        for noun in NOUNS:
            for colour in COLOURS:
                p = (ARTIST.replace(" blue ", f" {colour} ").replace(" waves ", f" {noun} ")
                     .replace(" steady ", f" {adverb} "))
                if p not in seen and n_tokens(tokenizer, p) == base:
                    seen.add(p)
                    yield p
