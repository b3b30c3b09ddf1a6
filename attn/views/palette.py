"""The demo's colours, in one place: the line diagram, the highlighted tokens, the top-k
bars and the heatmap all use these.

Chosen to be read by everyone (tests/test_palette.py checks them): text at least 4.5:1
against what it sits on, the strongest lines and bars at least 3:1 against white (WCAG 2.2
1.4.3, 1.4.11), and every two-sided encoding in blue and orange, which stay apart under
protanopia, deuteranopia and tritanopia (red and green do not), always next to a sign or a
number."""

from __future__ import annotations

BLUE = "#1f5fbf"  # attention: the diagram's lines, the token shading, the top-k bars
GRAY = "#8c8c8c"  # attention to <BOS> (the sink), drawn apart: 3.4:1 on white, lighter than the blue
PREDICTED = "#0a6e2e"  # the predicted token: text and border
PREDICTED_FILL = "#e6f4ea"  # the predicted token: background


MUTED_TEXT = "#6b6b6b"  # secondary text (<BOS>'s label, the '⋯' of hidden tokens): 5.3:1 on white
BLACK, WHITE = "#000000", "#ffffff"


def rgb(colour: str) -> tuple[int, int, int]:
    """'#1f5fbf' -> (31, 95, 191)."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(colour: str | tuple[int, int, int]) -> float:
    """WCAG 2's relative luminance of an sRGB colour ('#rrggbb' or (r, g, b) in 0-255)."""
    channels = rgb(colour) if isinstance(colour, str) else colour
    linear = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str | tuple[int, int, int], b: str | tuple[int, int, int]) -> float:
    """WCAG 2's contrast ratio of two colours, 1 to 21."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def ink_on(background: str | tuple[int, int, int]) -> str:
    """Black or white, whichever reads better on `background`: at least 4.58:1 on any colour."""
    return BLACK if contrast(BLACK, background) >= contrast(WHITE, background) else WHITE


def over_white(colour: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    """`colour` at opacity `alpha` over white, as the opaque colour it shows."""
    return tuple(round(255 + (c - 255) * alpha) for c in colour)


BLUE_RGB = rgb(BLUE)

# The heatmap: a "Blues"-like ramp from white to a dark blue; <BOS> gets a gray ramp.
HEATMAP_LOW = (247, 251, 255)
HEATMAP_HIGH = (8, 48, 107)
HEATMAP_GRAY_LOW = (245, 245, 245)
HEATMAP_GRAY_HIGH = (90, 90, 90)
GLOBAL_LAYER = "#b3261e"  # the heatmap's "G" marks

# Two-sided encodings: blue one way, orange the other (ColorBrewer's RdBu blue and PuOr
# orange ends), each 4.8:1 or more on white.
TWO_SIDED_BLUE = (33, 102, 172)  # #2166ac
TWO_SIDED_ORANGE = (179, 88, 6)  # #b35806

# Comparing two prompts (attn/views/compare_diagram.py, compare_difference.py): a token only
# one prompt has is orange; the difference strip diverges from near-white to blue (more
# attention in A) or orange (more in B).
CHANGED = "#a84700"  # text and border: 4.9:1 even on its own fill
CHANGED_FILL = "#fde7d4"
MORE_IN_A = TWO_SIDED_BLUE
MORE_IN_B = TWO_SIDED_ORANGE
NO_DIFFERENCE = (247, 247, 247)

# Token ablation (attn/views/ablation_bars.py): the prediction's probability fell without the
# token (orange) or rose (blue); the attention the token got is a neutral gray beside them.
FELL = "#b35806"
ROSE = "#2166ac"
ATTENTION_BAR = "#666666"

# A token the model generated (a step of a generation), not typed: its labels in every view.
GENERATED = "#7b3294"

# Where a sentence ends (attn/compute/profiles.py): ticks in the line diagram, bars in the
# highlighted tokens, the sentence strip's headings (5.3:1 on white).
SENTENCE = "#00796b"


def on_ramp(t: float) -> tuple[tuple[int, int, int], str]:
    """A cell's background at `t` in [0, 1] on the heatmap's ramp, and its text colour
    (`ink_on`: black or white, whichever reads better)."""
    t = min(max(float(t), 0.0), 1.0)
    background = tuple(int(round(a + (b - a) * t)) for a, b in zip(HEATMAP_LOW, HEATMAP_HIGH))
    return background, ink_on(background)
