"""The labels' font and how wide its text is: in ems before any renderer exists (for the
layout, attn/views/layout.py), in pixels on a renderer (for drawing, attn/views/drawing.py).
Both are cached, since the same token labels come back in every view of a prompt."""

from __future__ import annotations

import logging
from functools import lru_cache

from matplotlib.font_manager import FontProperties, findfont, get_font
from matplotlib.ft2font import LoadFlags

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


@lru_cache(maxsize=64)
def font(size: float, weight: str, style: str) -> FontProperties:
    return FontProperties(size=size, weight=weight, style=style)


# ---- on a renderer: text metrics depend only on the string, the font and the renderer's
# scale; kept (bounded).
_METRICS: dict = {}
_METRICS_MAX = 20_000


def _measure(renderer, text: str, prop: FontProperties) -> tuple[float, float, float]:
    key = (type(renderer).__name__, renderer.points_to_pixels(1.0), text, prop.get_size_in_points(),
           prop.get_weight(), prop.get_style())
    found = _METRICS.get(key)
    if found is None:
        if len(_METRICS) >= _METRICS_MAX:
            _METRICS.clear()
        found = _METRICS[key] = renderer.get_text_width_height_descent(text, prop, ismath=False)
    return found


def text_width(renderer, text: str, prop: FontProperties) -> float:
    """A label's width in the renderer's pixels."""
    return _measure(renderer, text, prop)[0]


def vertical_metrics(renderer, prop: FontProperties) -> tuple[float, float]:
    """(ascent, descent) of a line, as matplotlib's own text layout measures it ("lp")."""
    _, h, d = _measure(renderer, "lp", prop)
    return h - d, d


# ---- before any renderer exists: each character's advance in ems, read once from the font
# (FT2Font.set_text costs ~1 ms a call here, a cached advance nothing). Kerning is left out;
# a character the font lacks counts 1 em, about what a browser's fallback font (CJK, emoji)
# gives it.
_ADVANCES: dict[tuple[str, str, str], float] = {}
_ADVANCES_MAX = 50_000


def em_width(text: str, weight: str = "normal", style: str = "normal") -> float:
    """The width of a label in ems of its font (DejaVu Sans, as drawn and as the SVG asks)."""
    total = 0.0
    for ch in text:
        key = (ch, weight, style)
        advance = _ADVANCES.get(key)
        if advance is None:
            if len(_ADVANCES) >= _ADVANCES_MAX:
                _ADVANCES.clear()
            advance = _ADVANCES[key] = _advance(ch, weight, style)
        total += advance
    return total


def _advance(ch: str, weight: str, style: str) -> float:
    face = get_font(findfont(font(72.0, weight, style)))  # one per thread: safe to use here
    if ord(ch) not in _charmap(face.fname):
        return 1.0
    face.set_size(72.0, 72)  # 1 em = 72 px
    return face.load_char(ord(ch), flags=LoadFlags.NO_HINTING).linearHoriAdvance / 65536 / 72


@lru_cache(maxsize=8)
def _charmap(fname) -> frozenset[int]:
    return frozenset(get_font(fname).get_charmap())
