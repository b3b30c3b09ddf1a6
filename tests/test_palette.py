"""The palette reads for everyone (issue 19).

Colour vision: every two-sided encoding (ablation: the prediction fell / rose without a
token; comparison: more attention in A / in B) is simulated for protanopia, deuteranopia
and tritanopia with Machado, Oliveira & Fernandes 2009 ("A physiologically-based model for
simulation of color vision deficiency", IEEE TVCG 15(6)), severity 100, as the published
package colorspacious 1.1.2 implements it; the two sides must stay apart by a colour
difference ΔE' of at least 20 at full strength and 10 at a quarter of the scale (the palest
cells a student compares), measured in CAM02-UCS (Luo, Cui & Li 2006), where a ΔE' of 1 is
about one just-noticeable difference. The red/green pair the ablation bars used before fails
the same test under deuteranopia (ΔE' ≈ 9 at full strength).

Contrast (WCAG 2.2): text at least 4.5:1 on what it sits on (1.4.3), including text on the
strongest token shading and on every cell colour of the difference strip; the strongest
lines and bars at least 3:1 against white (1.4.11). The ratios are computed here from
WCAG's definition, not with the palette's own function, which is checked against it.
"""

from __future__ import annotations

import colorspacious  # requirements-dev.txt
import numpy as np
import pytest

from attn.views import palette

DEFICIENCIES = ("protanomaly", "deuteranomaly", "tritanomaly")  # at severity 100: the -opias
FULL_APART, QUARTER_APART = 20.0, 10.0  # CAM02-UCS ΔE'
WHITE = (255, 255, 255)


def rgb(colour) -> np.ndarray:
    return np.array(palette.rgb(colour) if isinstance(colour, str) else colour, dtype=float)


def blend(colour, t: float, base=palette.NO_DIFFERENCE) -> np.ndarray:
    """`colour` at strength t over `base`, as the difference strip's ramp draws it."""
    return rgb(base) + (rgb(colour) - rgb(base)) * t


def seen(colour: np.ndarray, deficiency: str | None) -> np.ndarray:
    """sRGB 0-1 as a person with `deficiency` sees it (None: as drawn)."""
    srgb = np.clip(colour / 255, 0, 1)
    if deficiency is None:
        return srgb
    cvd = {"name": "sRGB1+CVD", "cvd_type": deficiency, "severity": 100}
    return np.clip(colorspacious.cspace_convert(srgb, cvd, "sRGB1"), 0, 1)


def apart(a: np.ndarray, b: np.ndarray, deficiency: str | None) -> float:
    return float(colorspacious.deltaE(seen(a, deficiency), seen(b, deficiency), input_space="sRGB1"))


def wcag_contrast(a, b) -> float:
    def lum(c):
        c = rgb(c) / 255
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    high, low = sorted((lum(a), lum(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


TWO_SIDED = {
    "ablation: fell / rose": (palette.FELL, palette.ROSE),
    "comparison: more in A / more in B": (palette.MORE_IN_A, palette.MORE_IN_B),
}


# ---- colour vision --------------------------------------------------------------------------------


@pytest.mark.parametrize("deficiency", (None, *DEFICIENCIES))
@pytest.mark.parametrize("encoding", TWO_SIDED)
def test_the_two_sides_stay_apart_at_full_strength(encoding, deficiency):
    one, other = TWO_SIDED[encoding]
    assert apart(rgb(one), rgb(other), deficiency) >= FULL_APART


@pytest.mark.parametrize("deficiency", (None, *DEFICIENCIES))
def test_the_difference_strip_s_palest_cells_stay_apart(deficiency):
    assert apart(blend(palette.MORE_IN_A, 0.25), blend(palette.MORE_IN_B, 0.25), deficiency) >= QUARTER_APART


@pytest.mark.parametrize("deficiency", DEFICIENCIES)
def test_each_side_stands_out_from_no_difference(deficiency):
    for colour in (palette.MORE_IN_A, palette.MORE_IN_B):
        assert apart(blend(colour, 0.25), rgb(palette.NO_DIFFERENCE), deficiency) >= QUARTER_APART


def test_the_check_tells_red_from_green_apart_only_with_normal_vision():
    """The pair the ablation bars used before: the test above would have failed it."""
    red, green = rgb("#c5221f"), rgb("#0a7d32")
    assert apart(red, green, None) >= FULL_APART
    assert apart(red, green, "deuteranomaly") < FULL_APART


# ---- contrast -------------------------------------------------------------------------------------


def test_the_palette_s_contrast_is_wcag_s():
    for a, b in (("#1f5fbf", "#ffffff"), ("#0a6e2e", "#fde7d4"), ("#777777", "#ffffff"), ((9, 9, 9), (250, 0, 7))):
        assert palette.contrast(a, b) == pytest.approx(wcag_contrast(a, b), rel=1e-3)


TEXT_ON = {  # text colour: what it sits on
    "predicted token": (palette.PREDICTED, ["#ffffff", palette.PREDICTED_FILL, palette.CHANGED_FILL]),
    "changed token": (palette.CHANGED, ["#ffffff", palette.CHANGED_FILL]),
    "generated token": (palette.GENERATED, ["#ffffff"]),
    "global layer mark": (palette.GLOBAL_LAYER, ["#ffffff", palette.CHANGED_FILL]),
    "<BOS> and hidden-token labels": (palette.MUTED_TEXT, ["#ffffff"]),
    "ablation legend": (palette.FELL, ["#ffffff"]),
    "ablation legend (rose)": (palette.ROSE, ["#ffffff"]),
    "ablation legend (attention)": (palette.ATTENTION_BAR, ["#ffffff"]),
}


@pytest.mark.parametrize("name", TEXT_ON)
def test_text_colours_read_at_4_5_to_1(name):
    ink, backgrounds = TEXT_ON[name]
    for background in backgrounds:
        assert wcag_contrast(ink, background) >= 4.5, background


def test_text_on_every_token_shade_reads_at_4_5_to_1():
    """The highlighted tokens: the shade at every strength, up to the strongest token's."""
    for alpha in np.linspace(0, 1, 201):
        shade = palette.over_white(palette.BLUE_RGB, float(alpha))
        assert wcag_contrast(palette.ink_on(shade), shade) >= 4.5, alpha


def test_text_on_every_difference_cell_reads_at_4_5_to_1():
    from attn.views.compare_difference import _diverging

    for background, ink in _diverging(np.linspace(-1.2, 1.2, 241)):
        cell = tuple(int(c) for c in background[4:-1].split(","))
        assert wcag_contrast(ink, cell) >= 4.5, background


@pytest.mark.parametrize("name, colour", [
    ("attention lines and token bars", palette.BLUE),
    ("<BOS> lines", palette.GRAY),
    ("the prediction's lens bars", palette.PREDICTED),
    ("ablation: fell", palette.FELL),
    ("ablation: rose", palette.ROSE),
    ("ablation: attention", palette.ATTENTION_BAR),
    ("heatmap's darkest cell", palette.HEATMAP_HIGH),
    ("difference strip's full cells", palette.MORE_IN_A),
    ("difference strip's full cells (B)", palette.MORE_IN_B),
])
def test_the_strongest_lines_and_bars_stand_out_at_3_to_1(name, colour):
    assert wcag_contrast(colour, WHITE) >= 3.0
