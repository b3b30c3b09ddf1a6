"""Export what you see (attn/views/export.py): the view's diagram as PNG and SVG, its weights as
CSV, the whole analysis as JSON, and file names that are safe anywhere."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attn.compute.analysis import SCHEMA
from attn.compute.forward import analyze
from attn.views import export
from attn.views.diagram import diagram_title, line_diagram
from attn.views.view import View, row
from helpers import THIRSTY

VIEWS = [
    View(layer=12),
    View(layer=3, head=2, bos="exclude", measure="value"),
    View(layer=7, head="max", bos="hide", measure="rollout"),
]
HOSTILE = {
    "traversal": "../../etc/passwd",
    "windows": 'C:\\Windows\\system32\\con <aux> "nul" |prn| lpt1? *.*',
    "emoji": "😀🔥🚀 " * 5,
    "newlines": "line one\nline two\r\n\tline three\x00\x07",
    "long": "supercalifragilistic " * 25,  # 525 characters
    "dots": "... .. .",
    "cjk-rtl": "渴了 عطشان \u202eexe.txt",
}
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(png|svg|csv|json)$")


@pytest.fixture(scope="module")
def thirsty(bundled):
    return analyze(bundled, THIRSTY)


def read_csv(data: bytes) -> tuple[dict, list[list[str]]]:
    """The header (# key: JSON value) and the table, read with the csv module alone."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    header = {}
    for r in rows:
        if r and r[0].startswith("# ") and ": " in r[0]:
            assert len(r) == 1, f"a comment line split into fields: {r}"
            key, value = r[0][2:].split(": ", 1)
            header[key] = json.loads(value)
    return header, [r for r in rows if r and not r[0].startswith("#")]


@pytest.mark.parametrize("view", VIEWS, ids=["raw", "value", "rollout"])
def test_the_csv_weights_are_the_views_weights(thirsty, view):
    _, table = read_csv(export.weights_csv(thirsty, view))
    assert table[0] == ["position", "token", "weight"]
    assert [int(r[0]) for r in table[1:]] == list(range(thirsty.num_tokens))
    assert [r[1] for r in table[1:]] == thirsty.tokens
    weights = np.array([float(r[2]) for r in table[1:]], dtype=np.float32)
    np.testing.assert_array_equal(weights, row(thirsty, view))  # exact: float32 printed in full


def test_the_csv_header_names_the_view(thirsty):
    header, _ = read_csv(export.weights_csv(thirsty, VIEWS[1]))
    assert header == {
        "prompt": THIRSTY, "model": thirsty.model, "layer": 3, "layer_type": thirsty.layer_kind(3),
        "head": 2, "bos": "exclude", "measure": "value", "next_token": thirsty.next_token,
        "title": diagram_title(thirsty, VIEWS[1]),
    }


def test_a_rollout_csv_names_no_layer(thirsty):
    header, _ = read_csv(export.weights_csv(thirsty, VIEWS[2]))
    assert header["layer"] is None and header["layer_type"] is None and header["measure"] == "rollout"


def test_the_csv_reads_with_pandas(thirsty):
    view = VIEWS[0]
    frame = pd.read_csv(io.BytesIO(export.weights_csv(thirsty, view)), comment="#", keep_default_na=False)
    assert list(frame.columns) == ["position", "token", "weight"]
    assert frame["token"].tolist() == thirsty.tokens
    np.testing.assert_array_equal(frame["weight"].to_numpy(np.float32), row(thirsty, view))


def test_hostile_tokens_and_prompt_survive_both_readers(thirsty):
    """Commas, quotes, '#', line breaks and NUL in tokens; a prompt that ends with a comma
    and spans lines: the header stays one field a line, the table reads back exactly."""
    n = thirsty.num_tokens - 1
    pieces = ['a,b', 'say "hi"', "\n#not a comment", "#", "x\x00y", "\r\n", "😀", "# a", ',"', "NA"]
    tokens = ["<BOS>"] + [pieces[i % len(pieces)] for i in range(n)]
    prompt = 'He said,\n"so\u2028she went,'
    hostile = dataclasses.replace(thirsty, tokens=tokens, prompt=prompt, next_token=',"\n')
    data = export.weights_csv(hostile, VIEWS[0])
    header, table = read_csv(data)
    assert header["prompt"] == prompt and header["next_token"] == ',"\n'
    assert [r[1] for r in table[1:]] == tokens
    frame = pd.read_csv(io.BytesIO(data), comment="#", keep_default_na=False)
    assert frame["token"].tolist() == tokens


def test_the_png_is_drawn_at_print_resolution_with_the_title(thirsty):
    view = VIEWS[0]
    image = Image.open(io.BytesIO(export.diagram_png(thirsty, view)))
    fig = line_diagram(thirsty, view)
    assert image.size == (round(fig.get_figwidth() * 300), round(fig.get_figheight() * 300))
    assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert image.info["Title"] == diagram_title(thirsty, view)


def test_the_svg_is_a_standalone_file_with_the_title_as_text(thirsty):
    view = VIEWS[1]
    data = export.diagram_svg(thirsty, view)
    root = ET.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")
    assert diagram_title(thirsty, view) in [el.text for el in root.iter() if el.tag.endswith("text")]
    names = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert not names & {"image", "script", "foreignObject", "use"}  # nothing fetched, nothing run
    assert b"<dc:date>" not in data  # the same view exports the same bytes


def test_the_json_is_the_analysis_in_the_api_schema(thirsty):
    data = json.loads(export.analysis_json(thirsty))
    assert data == thirsty.to_json()
    assert data["schema"] == SCHEMA == "attn-analysis/3" and data["tokens"] == thirsty.tokens


def test_file_names_say_prompt_model_layer_head_and_measure(thirsty):
    names = export.file_names(thirsty, View(layer=12))
    assert names["png"] == "jide-was-thirsty-so-she__gemma-3-270m__layer12__mean.png"
    assert names["json"] == "jide-was-thirsty-so-she__gemma-3-270m.json"
    stems = {export.file_stem(thirsty, v) for v in (*VIEWS, View(layer=12, show_all=True), View(layer=12, head=1))}
    assert len(stems) == 5
    assert export.file_stem(thirsty, VIEWS[1]).endswith("__layer3__head2__value__bos-exclude")
    assert export.file_stem(thirsty, VIEWS[2]).endswith("__gemma-3-270m__rollout__bos-hide")


@pytest.mark.parametrize("prompt", HOSTILE.values(), ids=HOSTILE.keys())
def test_file_names_are_safe_for_any_prompt(thirsty, prompt):
    hostile = dataclasses.replace(thirsty, prompt=prompt, model='../"evil"\\model\n')
    for view in VIEWS:
        for name in export.file_names(hostile, view).values():
            assert SAFE_NAME.match(name), name
            assert len(name) <= 120 and ".." not in name


def test_write_all_writes_the_four_files_into_the_directory(thirsty, tmp_path):
    view = VIEWS[0]
    paths = export.write_all(thirsty, view, tmp_path / "new")
    assert [p.parent for p in paths] == [tmp_path / "new"] * 4
    assert {p.name for p in paths} == set(export.file_names(thirsty, view).values())
    assert paths.csv.read_bytes() == export.weights_csv(thirsty, view)
    assert paths.svg.read_bytes() == export.diagram_svg(thirsty, view)
    assert paths.json.read_bytes() == export.analysis_json(thirsty)
    assert Image.open(paths.png).info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert set(export.MIME) == {p.suffix[1:] for p in paths}
