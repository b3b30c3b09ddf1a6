"""The notice of a GPU refusal: the platform's own message, how to get more quota, and the
same prompt offered on the smaller model, which runs on the Space's CPU.

ZeroGPU refuses a call against the visitor's quota, or when no GPU frees in time. Visitors
from an embedded page count as anonymous, and signing in on huggingface.co gives more quota.
The offer is a button labelled with the smaller model's name: the model is never swapped in
silently, and the page stays as it was until the visitor chooses.
"""

from __future__ import annotations

from html import escape

import gradio as gr

from attn.errors import GpuRefusedError
from attn.model.registry import BUNDLED, REGISTRY
from attn.settings import Settings
from attn.web.gpu import SIGN_IN_URL

SIGN_IN = ("Signing in on huggingface.co gives you more GPU time: "
           f'<a href="{SIGN_IN_URL}" target="_blank" rel="noopener noreferrer">sign in</a> (opens a new tab).')


def smaller_model(settings: Settings, model: str) -> str | None:
    """The model offered instead of a refused GPU model: the bundled one, when it is offered
    and runs on the CPU."""
    if model == BUNDLED or BUNDLED not in settings.models or settings.uses_gpu(BUNDLED):
        return None
    return BUNDLED


def offer_label(name: str) -> str:
    return f"Analyze on the smaller model instead ({REGISTRY[name].label}, on the CPU)"


def refusal_notice(exc: GpuRefusedError, model: str, settings: Settings, shown: bool) -> tuple[str, dict]:
    """(the note's HTML, the offer button's update) for a refused GPU call of `model`."""
    still = " The views below still show the last analysis." if shown else ""
    note = (f'<div class="attn-note" role="alert">{escape(str(exc))}{still}<br>{SIGN_IN}</div>')
    smaller = smaller_model(settings, model)
    offer = gr.update(visible=False) if smaller is None else gr.update(visible=True, value=offer_label(smaller))
    return note, offer
