"""The embed mode, `?embed=1`: the page a course puts in a column of its own.

A course page gives an embed a column of about 700 px, and students open it on phones. So
with `embed=1` in its address (combinable with every deep-link parameter, attn/web/link.py)
the page shows the prompt and presets (and Analyze), the figure, layer and head, the
highlighted tokens (with "Show as table"), "Copy link" (which then copies the embed link)
and "Open the full explorer" (a new tab, the same view); everything else is hidden.

The mode is the page's stylesheet, switched on by a class that a script in <head> sets on
<html> before anything is drawn: no server round trip, nothing moves after the page
appears, and every control the full page has is still there for its events, only not shown.
The hidden components are named by their elem_id (attn/web/layout.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from attn.web.link import EMBED, full_query

EMBED_HEAD = f"""
<script>
if (new URLSearchParams(window.location.search).get('{EMBED}') === '1')
  document.documentElement.classList.add('attn-embed');
</script>
"""

# What the embed mode hides, by elem_id; rows and columns that would be left empty go too.
HIDDEN = ("intro", "look-for", "compare-row", "continue", "model", "model-status", "prediction-row",
          "bos", "show-all", "measure", "words-row", "layer-info", "ablate", "ablation", "all-layers", "export-row")

# Gradio repeats each rule of the page's CSS under `.gradio-container... .contain`, which cannot
# match a class on <html>: so the rules here start from :root, never hide by a bare id.
EMBED_CSS = (
    ", ".join(f":root.attn-embed #{name}" for name in HIDDEN) + " { display: none !important; }\n"
    # the wrapper Gradio puts around a form control, when the control is all it holds
    + ", ".join(f":root.attn-embed .form:has(> #{name}:only-child)" for name in HIDDEN) + " { display: none; }\n"
    + """
:root:not(.attn-embed) #open-full { display: none; }
:root.attn-embed #prompt-note:not(:has(.attn-note)) { display: none; }
:root.attn-embed footer { display: none; }
:root.attn-embed .gradio-container .main { padding-top: 8px; padding-bottom: 8px; }
:root.attn-embed .gradio-container { --layout-gap: 8px; }
.attn-open-full { font-weight: 600; }
"""
)


def full_explorer_html(query: str) -> str:
    """The embed mode's link to the whole explorer, in a new tab, at the view `query`
    ('?prompt=...', as the page's copy link writes it; '' before there is a view). The
    address is relative, so it opens the Space itself from an iframe."""
    href = query if query.startswith("?") else "./"
    return (f'<a class="attn-open-full" href="{escape(href, quote=True)}" target="_blank" rel="noopener">'
            "Open the full explorer<span class=\"attn-sr\"> (opens in a new tab)</span> ↗</a>")


def full_explorer_at_load(query: Mapping[str, str]) -> str:
    """The link before the first view is drawn: the page's own query, without `embed`."""
    return full_explorer_html(full_query(query))
