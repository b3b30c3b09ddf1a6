"""Export what you see: the current view's line diagram (PNG at print resolution, and SVG),
its weights (CSV) and the whole analysis (JSON), as bytes or as files named for the view.

Pure functions over an Analysis and a View, so the page, the CLI or a notebook can offer
the same files; nothing here runs the model or knows about the page.

The CSV is a table `position,token,weight` (one row per prompt token, <BOS> first) under
`#` comment lines that say what it shows, one `# key: value` each, the value in JSON
(commas written `\\u002c`, so a comment line is a single CSV field):

    # attn-view-csv/1
    # prompt: "Jide was thirsty so she went looking for"
    # model: "gemma-3-270m"
    # layer: 12
    # layer_type: "local (sliding window 512)"
    # head: "mean"
    # bos: "gray"
    # measure: "raw"
    # next_token: " water"
    # title: "Attention Weights for Layer 12 · local (sliding window 512) · mean over heads"
    "position","token","weight"
    0,"<BOS>",0.93171656
    ...

Read it with `pandas.read_csv(path, comment="#", keep_default_na=False)` (tokens are
always quoted, so a `#` in a token is never taken for a comment; without keep_default_na
a token such as "NA" reads as missing), or with the csv module:
`[r for r in csv.reader(f) if r and not r[0].startswith("#")]` with `f` opened with
`newline=""`. UTF-8 without a byte-order mark, `\\n` line ends. Weights are float32 and
printed with the fewest digits that read back to the same float32. For rollout (every
layer and head at once) `layer` and `layer_type` are null.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from pathlib import Path
from typing import NamedTuple

import numpy as np

from attn.compute.analysis import Analysis
from attn.views.diagram import diagram_title, line_diagram
from attn.views.drawing import to_png, to_svg
from attn.views.view import View, check_view, row

PRINT_DPI = 300
CSV_FORMAT = "attn-view-csv/1"
SLUG_CHARS = 24  # the prompt's part of a file name
MIME = {"png": "image/png", "svg": "image/svg+xml", "csv": "text/csv", "json": "application/json"}


class Exported(NamedTuple):
    """The four files of one export, in the order a page lists them."""

    png: Path
    svg: Path
    csv: Path
    json: Path


def diagram_png(analysis: Analysis, view: View, dpi: int = PRINT_DPI) -> bytes:
    """The line diagram as on screen, rasterised for print (300 dpi: a 16 in figure is
    4800 px wide); the PNG records its dpi and the title."""
    view = check_view(analysis, view)
    return to_png(line_diagram(analysis, view), dpi=dpi, metadata={"Title": diagram_title(analysis, view)})


def diagram_svg(analysis: Analysis, view: View) -> bytes:
    """The line diagram as on screen: a standalone SVG file, labels as text (the viewer's
    fonts, DejaVu Sans first, then any sans-serif), the title in its metadata too."""
    view = check_view(analysis, view)
    return to_svg(line_diagram(analysis, view), metadata={"Title": diagram_title(analysis, view), "Date": None})


def weights_csv(analysis: Analysis, view: View) -> bytes:
    """The view's weights, one row per token, under comment lines naming the view."""
    view = check_view(analysis, view)
    rollout = view.measure == "rollout"
    header = {
        "prompt": analysis.prompt,
        "model": analysis.model,
        "layer": None if rollout else view.layer,
        "layer_type": None if rollout else analysis.layer_kind(view.layer),
        "head": "mean" if rollout else view.head,
        "bos": view.bos,
        "measure": view.measure,
        "next_token": analysis.next_token,
        "title": diagram_title(analysis, view),
    }
    out = io.StringIO()
    out.write(f"# {CSV_FORMAT}\n")
    for key, value in header.items():
        out.write(f"# {key}: {_one_field(value)}\n")
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(["position", "token", "weight"])
    for position, (token, weight) in enumerate(zip(analysis.tokens, row(analysis, view))):
        writer.writerow([position, token, float(str(np.float32(weight)))])  # shortest exact float32
    return out.getvalue().encode("utf-8")


def _one_field(value) -> str:
    """A header value as JSON on one line with no comma: one CSV field, whatever it holds."""
    text = json.dumps(value, ensure_ascii=False)  # escapes quotes and control characters
    for ch in ",\u0085\u2028\u2029":  # the comma, and line breaks some readers honour
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def analysis_json(analysis: Analysis) -> bytes:
    """The whole analysis in the API's schema (attn-analysis/3), as `--json` writes it."""
    return json.dumps(analysis.to_json(), ensure_ascii=False).encode("utf-8")


# ---- file names ------------------------------------------------------------------------


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """The first words of a prompt as a-z, 0-9 and hyphens (accents dropped): safe in a file
    name on every system. 'prompt' when nothing is left (a prompt in CJK or emoji)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    words = re.findall(r"[a-z0-9]+", plain)
    out = words[0][:limit] if words else ""
    for word in words[1:]:
        if len(out) + 1 + len(word) > limit:
            break
        out += "-" + word
    return out or "prompt"


def file_stem(analysis: Analysis, view: View) -> str:
    """What one view's files are called: prompt, model, layer and head (measure and BOS mode
    when not the default), e.g. 'jide-was-thirsty-so-she__gemma-3-270m__layer12__mean'."""
    view = check_view(analysis, view)
    model = re.sub(r"[^a-z0-9]+", "-", analysis.model.lower()).strip("-")[:40] or "model"
    parts = [slug(analysis.prompt), model]
    if view.measure == "rollout":
        parts.append("rollout")  # every layer and head at once
    else:
        parts += [f"layer{view.layer}", view.head if isinstance(view.head, str) else f"head{view.head}"]
        if view.measure != "raw":
            parts.append(view.measure)
    if view.bos != "gray":
        parts.append(f"bos-{view.bos}")
    if view.show_all:
        parts.append("all")
    return "__".join(parts)


def file_names(analysis: Analysis, view: View) -> dict[str, str]:
    """The four files' names, by kind (the keys of MIME). The JSON holds the whole analysis,
    so its name is the prompt and model only."""
    stem = file_stem(analysis, view)
    whole = "__".join(stem.split("__")[:2])
    return {"png": f"{stem}.png", "svg": f"{stem}.svg", "csv": f"{stem}.csv", "json": f"{whole}.json"}


def write_all(analysis: Analysis, view: View, directory: str | Path) -> Exported:
    """Write the PNG, SVG, CSV and JSON of this view into `directory` (made if missing) and
    return their paths. Use a fresh directory per export (tempfile.mkdtemp): two visitors
    exporting the same view would otherwise write the same names."""
    view = check_view(analysis, view)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names = file_names(analysis, view)
    data = {
        "png": diagram_png(analysis, view),
        "svg": diagram_svg(analysis, view),
        "csv": weights_csv(analysis, view),
        "json": analysis_json(analysis),
    }
    paths = {}
    for kind, content in data.items():
        paths[kind] = folder / names[kind]
        paths[kind].write_bytes(content)
    return Exported(**paths)
