"""Attention explorer: which prompt tokens did the model look at to predict the next one?

`python app.py` serves the demo (port from GRADIO_SERVER_PORT, default 7860). One forward
pass per prompt is cached by the engine; every control re-renders from that cache.

The entry point only: `create_app(settings)` builds the page, `main()` serves it. Importing
this module starts nothing; gradio is imported inside the functions, so that main can start
the bundled model's one-time conversion before gradio's import (see main).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from attn.settings import Settings

if TYPE_CHECKING:
    import gradio as gr

    from attn.compute.engine import Engine
    from attn.web.page import Page

log = logging.getLogger("app")
HERE = Path(__file__).parent


def examples() -> list[dict]:
    """The presets: prompt, suggested layer per model, and what to look for."""
    return json.loads((HERE / "examples.json").read_text(encoding="utf-8"))


def create_page(settings: Settings, engine: Engine | None = None) -> Page:
    """The page and what drives it in process. On ZeroGPU the engine sends the GPU models'
    calls through spaces.GPU; a test may hand in an engine of its own."""
    from attn.compute.engine import Engine
    from attn.errors import AttnError
    from attn.settings import quiet_forks
    from attn.views.view_cache import ViewCache
    from attn.web import gpu, page

    quiet_forks()  # before the first fork: spaces.GPU forks its workers
    if engine is None:
        engine = Engine.for_settings(settings, accelerator=gpu.accelerator(settings) if settings.zero_gpu else None)
    # ZeroGPU wants GPU weights placed on cuda when the app is created, in the main thread
    # (its cuda emulation is per thread); the CPU models load after the server is up (main).
    for name in settings.models:
        if settings.uses_gpu(name):
            try:
                engine.model(name)
            except AttnError as exc:
                log.error("%s", exc)
    views = ViewCache(settings.figure_cache_bytes, prefetch=settings.prefetch)
    return page.build(settings, engine, views, examples())


def create_app(settings: Settings) -> gr.Blocks:
    """The demo's Blocks, queue and API included, ready to launch."""
    return create_page(settings).blocks


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    from attn.model import bundled
    from attn.model.registry import BUNDLED

    # An empty cache (the first start; every restart of a Space without a volume) means a
    # one-time conversion of the bundled model: it starts now, in a process of its own, so it
    # runs on the other core while gradio imports instead of after the server is up.
    converter = bundled.convert_in_background(settings.cache_dir) if BUNDLED in settings.loads_at_start else None
    page = create_page(settings)
    from attn.web.layout import CSS, HEAD

    page.blocks.launch(share=False, css=CSS, head=HEAD, ssr_mode=False, footer_links=["api"], prevent_thread_lock=True)
    for name in settings.loads_at_start:  # after the server answers: start-up is not held up by them
        if not settings.uses_gpu(name):  # (the GPU ones were placed while the app was built)
            page.engine.preload(name)
    page.blocks.block_thread()
    del converter  # held until the server stops: the conversion runs on its own meanwhile


if __name__ == "__main__":
    main()
