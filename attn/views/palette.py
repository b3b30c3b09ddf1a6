"""The demo's colours, in one place: the line diagram, the highlighted tokens, the top-k
bars and the heatmap all use these."""

from __future__ import annotations

BLUE = "#1f5fbf"  # attention: the diagram's lines, the token shading, the top-k bars
GRAY = "#b8b8b8"  # attention to <BOS> (the sink), drawn apart
PREDICTED = "#0a7d32"  # the predicted token: text and border
PREDICTED_FILL = "#e6f4ea"  # the predicted token: background


def rgb(colour: str) -> tuple[int, int, int]:
    """'#1f5fbf' -> (31, 95, 191)."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


BLUE_RGB = rgb(BLUE)

# The heatmap: a "Blues"-like ramp from white to a dark blue; <BOS> gets a gray ramp.
HEATMAP_LOW = (247, 251, 255)
HEATMAP_HIGH = (8, 48, 107)
HEATMAP_GRAY_LOW = (245, 245, 245)
HEATMAP_GRAY_HIGH = (90, 90, 90)
GLOBAL_LAYER = "#b3261e"  # the heatmap's "G" marks

# Comparing two prompts (attn/views/compare_diagram.py, compare_difference.py): a token only
# one prompt has is orange; the difference strip diverges from near-white to blue (more
# attention in A) or red (more in B).
CHANGED = "#c25400"  # text and border: dark enough to read as a label
CHANGED_FILL = "#fde7d4"
MORE_IN_A = (33, 102, 172)
MORE_IN_B = (178, 24, 43)
NO_DIFFERENCE = (247, 247, 247)

# A token the model generated (a step of a generation), not typed: its labels in every view.
GENERATED = "#7b3294"

# Where a sentence ends (attn/compute/profiles.py): ticks in the line diagram, bars in the
# highlighted tokens, the sentence strip's headings (5.3:1 on white).
SENTENCE = "#00796b"


def on_ramp(t: float) -> tuple[tuple[int, int, int], str]:
    """A cell's background at `t` in [0, 1] on the heatmap's ramp, and its text colour: black
    or white, whichever contrasts more (one of the two always reaches 4.5:1, WCAG AA)."""
    t = min(max(float(t), 0.0), 1.0)
    background = tuple(int(round(a + (b - a) * t)) for a, b in zip(HEATMAP_LOW, HEATMAP_HIGH))
    lum = luminance(background)
    return background, ("#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff")


def luminance(colour: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
