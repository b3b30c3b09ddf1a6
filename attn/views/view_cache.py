"""Rendered views (line diagrams, heatmap grids), cached, with the views likely to come
next drawn ahead of time.

A line diagram costs a few milliseconds and the heatmap's cells about two; a slider move
should cost a lookup. After a view is shown, one background worker draws the views likely
to come next (every other layer, then the other head and BOS modes), abandoning them as
soon as another view is asked for. The heatmap's grid is the same for every layer, so it
is kept per head and BOS mode and only the current-layer mark is redrawn.

A drawing is keyed by what it shows, not by the prompt's text alone: a generation step's
`prompt` is the typed text plus the generated text, so a typed prompt of that text (other
tokens, no generated marks), another sample with another next token, or the same analysis
merged into words (attn/views/words.py) would otherwise be served one another's drawings.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import replace

from attn.compute.analysis import Analysis
from attn.compute.cache import ByteLRU
from attn.views.diagram import line_svg
from attn.views.drawing import Svg
from attn.views.heatmap import heatmap_grid, heatmap_html
from attn.views.view import BOS_MODES, View, available_measures, check_view

log = logging.getLogger(__name__)


class ViewCache:
    def __init__(self, max_bytes: int = 64 << 20, prefetch: bool = True):
        self.cache: ByteLRU[Svg | str] = ByteLRU(max_bytes, size_of=len)
        self.prefetch_enabled = prefetch
        self._pending: tuple[Analysis, View] | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.rendered = 0  # figures actually drawn (foreground and background)
        self.settle_seconds = 0.15

    @staticmethod
    def _key(analysis: Analysis, view: View):
        return (*drawn(analysis), view)

    def _draw(self, analysis: Analysis, view: View) -> Svg:
        """Draw once: a request for a view the worker is drawing waits for that drawing."""

        def draw() -> Svg:
            self.rendered += 1
            return line_svg(analysis, view)

        return self.cache.get_or_compute(self._key(analysis, view), draw)

    def _grid(self, analysis: Analysis, view: View) -> str:
        key = (*drawn(analysis), "heatmap", view.measure, view.head, view.bos)
        return self.cache.get_or_compute(key, lambda: heatmap_grid(analysis, view))

    def heatmap(self, analysis: Analysis, view: View) -> str:
        """The all-layers overview for this view, with its layer marked."""
        view = check_view(analysis, view)
        return heatmap_html(analysis, view, grid=self._grid(analysis, view))

    def line_svg(self, analysis: Analysis, view: View) -> Svg:
        """The line diagram for this view; then the likely next views are drawn behind it."""
        view = check_view(analysis, view)
        svg = self._draw(analysis, view)
        if self.prefetch_enabled:
            self._schedule(analysis, view)
        return svg

    def _schedule(self, analysis: Analysis, view: View) -> None:
        with self._lock:
            self._pending = (analysis, view)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="figure-prefetch", daemon=True)
                self._worker.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                job, self._pending = self._pending, None
                self._wake.clear()
            if job is None:
                continue
            analysis, view = job
            # Let the request that scheduled this finish first; a quick slider drag
            # replaces the job before any drawing starts.
            if self._wake.wait(self.settle_seconds):
                continue
            for other in likely_next(analysis, view):
                if self._wake.is_set():
                    break  # a newer view was requested; serve that one instead
                if self._key(analysis, other) in self.cache:
                    continue
                try:
                    self._draw(analysis, other)
                    self._grid(analysis, other)
                except Exception:  # a background nicety must never take the server down
                    log.exception("prefetch of %s failed", other)
                    break


def drawn(analysis: Analysis) -> tuple:
    """What an analysis's drawings depend on besides the view: the model and text, the
    tokens (a digest of their ids: the same text can split otherwise), the prediction,
    where generated tokens start and whether tokens are words. About 20 µs at 2048 tokens."""
    ids = hashlib.blake2b(analysis.token_ids.tobytes(), digest_size=16).digest()
    return (analysis.model, analysis.dtype, analysis.prompt, analysis.num_tokens, ids, analysis.next_token_id,
            analysis.generated_from, analysis.words)


def likely_next(analysis: Analysis, view: View) -> list[View]:
    """Views a person is likely to ask for next: the other layers, nearest first (the
    slider usually moves by one), then this layer with the other head and BOS modes and
    the other measures this analysis has."""
    layers = sorted(range(analysis.num_layers), key=lambda layer: abs(layer - view.layer))
    heads = ["mean", "max", *range(analysis.num_heads)]
    return (
        [replace(view, layer=layer) for layer in layers if layer != view.layer]
        + [replace(view, head=head) for head in heads if head != view.head]
        + [replace(view, bos=bos) for bos in BOS_MODES if bos != view.bos]
        + [replace(view, measure=m) for m in available_measures(analysis) if m != view.measure]
    )
