"""Drawing a diagram with matplotlib, and writing it as SVG or PNG.

A diagram is lines and `Label`s in one box (`Diagram`), drawn straight onto matplotlib's
renderer: no Axes, no Text artists. Figures are built on `Figure` directly (no pyplot
global state), so concurrent requests never share a canvas; saving takes a lock, because
the settings it needs (rcParams, warning filters) are process-wide.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from html import unescape

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_svg import RendererSVG
from matplotlib.colors import to_hex, to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import BoxStyle
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import IdentityTransform

from attn.views.fonts import font, text_width, vertical_metrics
from attn.views.palette import PREDICTED, PREDICTED_FILL

FAST_TEXT = True  # False: every label through matplotlib's draw_text (the tests compare the two)


@dataclass(frozen=True)
class Label:
    """One piece of text: at (x, y) in data units, or in figure fractions when `on_figure`."""

    x: float
    y: float
    text: str
    size: float
    va: str = "baseline"  # "bottom" | "top" | "baseline"
    ha: str = "center"  # "center" | "left"
    color: str = "black"
    weight: str = "normal"
    style: str = "normal"
    boxed: bool = False  # the predicted token's rounded green box
    on_figure: bool = False
    box_edge: str = PREDICTED  # a boxed label's border and fill (the comparison boxes other tokens)
    box_fill: str = PREDICTED_FILL


class Diagram(Artist):
    """The whole diagram drawn straight onto matplotlib's renderer (SVG or Agg).

    A matplotlib Text artist in an Axes costs about half a millisecond to build, lay out
    and write; this draws the same labels for a few microseconds each, so drawing a view
    costs milliseconds and a slider move never waits for a figure. Text stays text: the
    SVG backend writes each label as a centred <text> (XML-escaped, never mathtext).
    """

    def __init__(self, *, box, xlim, ylim, segments, widths, colors, labels, label_pt=12.0):
        super().__init__()
        self.box, self.xlim, self.ylim = box, xlim, ylim
        self.segments, self.widths, self.colors = segments, widths, colors
        self.labels = labels
        self.label_pt = label_pt  # the token labels' size, for the page's legibility floor

    def draw(self, renderer):
        to_display = self.figure.transFigure.transform
        gc = renderer.new_gc()
        svg = _as_svg(renderer)
        if self.segments and svg is not None:
            ends = to_display(self._to_figure(np.asarray(self.segments, dtype=float).reshape(-1, 2)))
            _svg_lines(svg, ends.reshape(-1, 2, 2), self.widths, self.colors)
        elif self.segments:
            ends = to_display(self._to_figure(np.asarray(self.segments, dtype=float).reshape(-1, 2)))
            gc.set_alpha(0.7)
            for (a, b), width, color in zip(ends.reshape(-1, 2, 2), self.widths, self.colors):
                gc.set_linewidth(width)
                gc.set_foreground(_rgba(color), isRGBA=True)
                renderer.draw_path(gc, Path([a, b]), IdentityTransform())
            gc.set_alpha(1.0)
        labels = self.labels
        points = np.array([(lb.x, lb.y) for lb in labels], dtype=float).reshape(-1, 2)
        in_data = np.array([not lb.on_figure for lb in labels], dtype=bool)
        points[in_data] = self._to_figure(points[in_data])
        points = to_display(points)
        anchor = Text(transform=IdentityTransform())  # where the SVG backend centres the text
        svg_anchors = svg is not None and matplotlib.rcParams["svg.fonttype"] == "none"
        flip = renderer.get_canvas_width_height()[1] if renderer.flipy() else None
        for label, (x, y) in zip(labels, points):
            prop = font(label.size, label.weight, label.style)
            ascent, descent = vertical_metrics(renderer, prop)
            y += descent if label.va == "bottom" else -ascent if label.va == "top" else 0.0  # the baseline
            start = x
            if label.ha == "center" and (label.boxed or not svg_anchors):
                start = x - text_width(renderer, label.text, prop) / 2
            if label.boxed:
                _draw_box(renderer, start, y - descent, 2 * (x - start), ascent + descent, prop,
                          label.box_edge, label.box_fill)
            if FAST_TEXT and svg_anchors and flip == svg.height:
                _svg_text(svg, x, flip - y, label.text, _text_style(prop, label.color, label.ha))
                continue
            gc.set_foreground(_rgba(label.color), isRGBA=True)
            anchor.set_position((x, y))
            if anchor.get_horizontalalignment() != label.ha:
                anchor.set_horizontalalignment(label.ha)
            renderer.draw_text(
                gc, start, y if flip is None else flip - y, label.text, prop, 0, ismath=False, mtext=anchor
            )
        gc.restore()
        self.stale = False

    def _to_figure(self, xy: np.ndarray) -> np.ndarray:
        """Data units (the lab's axes: columns along x, Input at y=0, Output at y=1) to
        figure fractions."""
        (x0, x1), (y0, y1), (bl, bb, bw, bh) = self.xlim, self.ylim, self.box
        return np.column_stack((bl + (xy[:, 0] - x0) / (x1 - x0) * bw, bb + (xy[:, 1] - y0) / (y1 - y0) * bh))


def label_size(fig: Figure) -> float:
    """The font size (pt) of a diagram's token labels."""
    return next(a.label_pt for a in fig.artists if isinstance(a, Diagram))


def _as_svg(renderer) -> RendererSVG | None:
    """The SVG renderer, also from under the wrapper savefig puts around it."""
    inner = getattr(renderer, "_renderer", renderer)  # MixedModeRenderer's vector renderer
    return inner if isinstance(inner, RendererSVG) else None


def _svg_lines(renderer: RendererSVG, ends: np.ndarray, widths, colors) -> None:
    """The lines as matplotlib's SVG writer writes them (the same <path>, d and style), for a
    quarter of the cost: its draw_path (clipping, graphics context, CSS) costs tens of
    microseconds a line, and all-pairs mode draws hundreds (703 for the artist passage)."""
    flip = renderer.height  # SVG's y grows downwards
    element = renderer.writer.element
    for (a, b), width, color in zip(ends, widths, colors):
        element("path", d=f"M {_num(a[0])} {_num(flip - a[1])} \nL {_num(b[0])} {_num(flip - b[1])} \n",
                style=f"fill: none; opacity: 0.7; stroke: {_hex(color)}; stroke-width: {_num(width)}")


def _svg_text(renderer: RendererSVG, x: float, y: float, text: str, style: str) -> None:
    """A label as matplotlib's SVG writer writes unrotated anchored text (the same <text>,
    style, x, y and transform), for a fraction of the cost: its draw_text rebuilds the font
    CSS and the graphics state for every label, ~0.2 ms each, half of a view's drawing."""
    renderer.writer.element("text", text, attrib={
        "style": style, "x": _num(x), "y": _num(y), "transform": f"rotate(0 {_num(x)} {_num(y)})"})


_STYLES: dict = {}


def _text_style(prop: FontProperties, color: str, ha: str) -> str:
    """The style attribute matplotlib's SVG writer gives such a label, read once from the
    writer itself (font names, weight and colour as it spells them) and kept."""
    key = (prop, color, ha, tuple(matplotlib.rcParams["font.family"]),
           tuple(matplotlib.rcParams["font.sans-serif"]))
    style = _STYLES.get(key)
    if style is None:
        written = io.StringIO()
        scratch = RendererSVG(10, 10, written)
        gc = scratch.new_gc()
        gc.set_foreground(_rgba(color), isRGBA=True)
        scratch.draw_text(gc, 0, 0, "x", prop, 0, ismath=False,
                          mtext=Text(transform=IdentityTransform(), horizontalalignment=ha))
        gc.restore()
        style = _STYLES[key] = unescape(re.findall(r'<text [^>]*?style="([^"]*)"', written.getvalue())[-1])
    return style


def _num(x: float) -> str:
    """A number as matplotlib's SVG writer prints it: six decimals, trailing zeros cut."""
    return f"{x:f}".rstrip("0").rstrip(".")


@lru_cache(maxsize=64)
def _hex(color: str) -> str:
    return to_hex(color)


@lru_cache(maxsize=64)
def _rgba(color: str) -> tuple[float, float, float, float]:
    return to_rgba(color)


def _draw_box(renderer, x, y, width, height, prop, edge=PREDICTED, fill=PREDICTED_FILL) -> None:
    """The predicted token's box: rounded, padded by 0.2 of the font size."""
    size = renderer.points_to_pixels(prop.get_size_in_points())
    path = BoxStyle("round", pad=0.2)(x, y, width, height, size)
    box = renderer.new_gc()
    box.set_foreground(edge)
    box.set_linewidth(1.0)
    renderer.draw_path(box, path, IdentityTransform(), to_rgb(fill))
    box.restore()


# ---- writing a figure


_SAVING = threading.Lock()  # savefig below changes process-wide settings


def to_svg(fig: Figure, metadata: dict | None = None) -> bytes:
    """SVG with real <text> (not glyph paths): about 14x faster than PNG here, crisp at any
    zoom, and the browser's fonts cover emoji and CJK that matplotlib's fonts lack.
    Text is XML-escaped by matplotlib's SVG writer. `metadata` as savefig takes it
    (Title, Date: None for a file that does not change with the clock)."""
    buf = io.BytesIO()
    # rc_context and catch_warnings change process-wide settings: two threads drawing at once
    # (a request and the prefetcher) could restore them under each other, and text came out
    # as glyph paths.
    with _SAVING, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "attn"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="svg", metadata=metadata)
    return buf.getvalue()


def to_png(fig: Figure, dpi: int = 100, metadata: dict | None = None) -> bytes:
    """Raster export (the docs' pictures, downloads): `dpi` is recorded in the file, missing
    glyphs are not errors (they are drawn as boxes: matplotlib's fonts lack emoji and CJK)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with _SAVING, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=dpi, metadata=metadata)
    return buf.getvalue()


@dataclass(frozen=True)
class Svg:
    """A drawing as SVG, its natural width in CSS pixels and its labels' font size."""

    data: bytes
    width_px: float
    label_pt: float = 12.0

    def __len__(self) -> int:  # bytes held, for a cache's byte bound
        return len(self.data)


def figure_svg(fig: Figure) -> Svg:
    """A diagram's figure as SVG, with its natural width and its labels' size."""
    # inches -> pt (the SVG's unit) -> CSS px
    return Svg(to_svg(fig), fig.get_figwidth() * 72 * 4 / 3, label_size(fig))
