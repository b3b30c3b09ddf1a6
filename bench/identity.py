"""The output-identity check: the page's outputs and the API's JSON on the presets, dumped
into a folder, one JSON file per call, so that two checkouts can be compared byte for byte.

    python bench/identity.py OUT [--root CHECKOUT] [--page-config FILE]
    diff -rq OUT_BEFORE OUT_AFTER   # must print nothing

`--root` is the checkout whose app.py is driven (default: this one). Both layouts are
driven: the module-level app of before issue 18 (app.on_analyze, app.on_view, app.api_*,
app.ENGINE) and the entry point after it (app.create_page(Settings)). What is dumped: the
analyze event on 3 presets, 21 views of each (layers, head modes, BOS modes, measures,
words), 8 views after an ablation, 4 exports (file digests), compare and continuation
steps, and /analyze, /view, /ablate, /compare, /generate. `--page-config` also writes the
page's Gradio config (components, layout, events, their endpoint names, concurrency limits
and queue), to diff the same way.

Normalised, since it is no output: the handlers' dicts {component: value} become the old
positional lists (a component left out is gr.skip()'s value), and the session state that
replaced the old `key` dict is written as that dict. SVGs embedded as base64 are decoded and
matplotlib's creation date dropped (the comparison figure carries one).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path

M = "gemma-3-270m"
SKIP = {"__type__": "update"}  # what gr.skip() returns


def NOP(*args, **kwargs) -> None:
    """A progress bar that shows nothing."""


VIEWS = [  # (name, layer or None for the preset's, head, bos, show_all, measure, words)
    ("preset", None, "Mean over heads", "gray", False, "raw", False),
    ("layer0", 0, "Mean over heads", "gray", False, "raw", False),
    ("layer17", 17, "Mean over heads", "gray", False, "raw", False),
    ("layer5", 5, "Mean over heads", "gray", False, "raw", False),
    ("max", None, "Max over heads", "gray", False, "raw", False),
    ("head0", None, "Head 0", "gray", False, "raw", False),
    ("head3", None, "Head 3", "gray", False, "raw", False),
    ("hide", None, "Mean over heads", "hide", False, "raw", False),
    ("exclude", None, "Mean over heads", "exclude", False, "raw", False),
    ("all", None, "Mean over heads", "gray", True, "raw", False),
    ("value", None, "Mean over heads", "gray", False, "value", False),
    ("rollout", None, "Mean over heads", "gray", False, "rollout", False),
    ("value_ex", None, "Mean over heads", "exclude", False, "value", False),
    ("words", None, "Mean over heads", "gray", False, "raw", True),
    ("words_value", None, "Mean over heads", "gray", False, "value", True),
    ("words_all", None, "Mean over heads", "gray", True, "raw", True),
    ("l3_h1_hide", 3, "Head 1", "hide", False, "raw", False),
    ("rollout_words", None, "Mean over heads", "exclude", False, "rollout", True),
    ("all_max_ex", None, "Max over heads", "exclude", True, "raw", False),
    ("value_h2_l17", 17, "Head 2", "gray", False, "value", False),
    ("l1_all_hide", 1, "Head 0", "hide", True, "raw", False),
]
FEW = [VIEWS[0], VIEWS[4], VIEWS[9], VIEWS[10], VIEWS[11], VIEWS[13]]


class OldLayout:
    """app.py before issue 18: module globals, handlers returning positional tuples."""

    def __init__(self, app):
        self.app, self.engine = app, app.ENGINE
        self.blocks = app.demo
        queue_size = int(os.environ.get("ATTN_QUEUE_SIZE", "64"))
        self.blocks.queue(max_size=queue_size, default_concurrency_limit=2)  # as its __main__ did

    def analyze(self, *args) -> tuple[list, object]:
        out = self.app.on_analyze(*args[:4], None, *args[4:], progress=NOP)
        return list(out), out[0]

    def view(self, state, *controls) -> list:
        return list(self.app.on_view(state, *controls))

    def export(self, state, *controls):
        return self.app.on_export(state, *controls)

    def api(self, name: str, *args):
        return getattr(self.app, f"api_{name}")(*args)


class NewLayout:
    """app.py after issue 18: create_page(Settings), handlers returning {component: value}."""

    def __init__(self, app):
        from attn.settings import Settings

        self.page = app.create_page(Settings.from_env())
        self.engine, self.ui, self.on = self.page.engine, self.page.ui, self.page.handlers
        self.blocks = self.page.blocks

    def positional(self, out, outputs: list) -> list:
        """{component: value} as the old tuple: gr.skip() where a component is left out; the
        session state as the old key dict."""
        out = {} if out == SKIP else out
        values = [out.get(c, SKIP) for c in outputs]
        return [self.key(v) if c is self.ui.shown else v for c, v in zip(outputs, values)]

    @staticmethod
    def key(shown):
        if shown == SKIP:
            return shown
        s, c = shown.subject, shown.subject.continuation
        generate = None if c is None else [c.max_new_tokens, c.temperature, c.seed or 0]
        return {"model": s.model, "prompt": s.prompt, "compare": s.compare, "generate": generate}

    def analyze(self, *args) -> tuple[list, object]:
        out = self.on.on_analyze(*args[:4], None, *args[4:], progress=NOP)
        return self.positional(out, self.ui.analysis_outputs), out[self.ui.shown]

    def view(self, state, *controls) -> list:
        return self.positional(self.on.on_view(state, *controls), self.ui.view_outputs)

    def export(self, state, *controls):
        return self.on.on_export(state, *controls)

    def api(self, name: str, *args):
        return getattr(self.page.api, name)(*args)


def page_config(blocks) -> str:
    """The page as Gradio serves it, less what differs between two processes."""
    config = blocks.get_config_file()
    for volatile in ("root", "app_id", "version", "theme_hash"):
        config.pop(volatile, None)
    events = [(fn.api_name, fn.api_visibility, fn.concurrency_limit, fn.queue, fn.show_progress)
              for fn in blocks.fns.values()]
    queue = (blocks._queue.max_size, blocks._queue.default_concurrency_limit)
    text = json.dumps({"config": config, "events": events, "queue": queue}, indent=0, sort_keys=True, default=str)
    return re.sub(r" at 0x[0-9a-f]+>", ">", text)  # functions' addresses


def norm(v):
    if isinstance(v, dict) and v.get("__type__") == "update":
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    return v


B64 = re.compile(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)")


def undated(text: str) -> str:
    def svg(m):
        body = base64.b64decode(m.group(1)).decode()
        return "data:image/svg+xml;DECODED," + re.sub(r"<dc:date>[^<]*</dc:date>", "<dc:date/>", body)

    return B64.sub(svg, text)


def dump_all(layout, out: Path, presets: list[dict]) -> None:
    def dump(name, value):
        text = json.dumps(norm(value), ensure_ascii=False, indent=0, sort_keys=True, default=str)
        (out / f"{name}.json").write_text(undated(text))

    def controls(v, preset_layer):
        _, layer, head, bos, show_all, measure, words = v
        return (preset_layer if layer is None else layer, head, bos, show_all, measure, words)

    def run(tag, prompt, layer, compare="", n_new=1, temperature=0.0, seed=0, steps=(0,), views=VIEWS):
        values, state = layout.analyze(prompt, M, layer, "Mean over heads", bool(compare), compare or "", n_new,
                                       temperature, seed, steps[0])
        dump(f"{tag}__analyze", values)
        for step in steps:
            for v in views:
                dump(f"{tag}__s{step}__{v[0]}", layout.view(state, step, *controls(v, layer)))
        return state

    for i, p in enumerate(presets):
        layer = p["layer"][M]
        state = run(f"p{i}", p["prompt"], layer)
        layout.engine.ablate(p["prompt"], M)
        for v in VIEWS[:6] + VIEWS[10:12]:
            dump(f"p{i}__ablated__{v[0]}", layout.view(state, 0, *controls(v, layer)))
        for v in (VIEWS[0], VIEWS[9], VIEWS[10], VIEWS[13]):
            files = layout.export(state, 0, *controls(v, layer))
            dump(f"p{i}__export__{v[0]}", {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest()
                                           for f in files})
        dump(f"p{i}__api_analyze", layout.api("analyze", p["prompt"], M))
        dump(f"p{i}__api_view", [layout.api("view", p["prompt"], M, *args) for args in
                                 [(layer, "mean", "gray", "raw"), (3, "max", "exclude", "value"),
                                  (0, "2", "hide", "rollout")]])
        dump(f"p{i}__api_ablate", layout.api("ablate", p["prompt"], M))
        dump(f"p{i}__api_generate", layout.api("generate", p["prompt"], M, 4, 0.0, 0))

    blue, red = presets[2]["prompt"], presets[2]["prompt"].replace("blue", "red")
    run("cmp01", presets[0]["prompt"], 12, compare=presets[1]["prompt"], views=FEW)
    run("cmp2", blue, 12, compare=red, views=FEW)
    run("gen0", presets[1]["prompt"], 12, n_new=5, steps=(0, 2, 4), views=FEW)
    run("gen1", presets[0]["prompt"], 12, n_new=4, temperature=0.8, seed=7, steps=(1, 3), views=FEW)
    dump("api_compare", [layout.api("compare", presets[0]["prompt"], presets[1]["prompt"], M),
                         layout.api("compare", blue, red, M)])
    dump("api_generate_sampled", layout.api("generate", blue, M, 6, 0.9, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose app.py to drive")
    parser.add_argument("--page-config", type=Path, help="also write the page's Gradio config here")
    args = parser.parse_args()
    out, root = args.out.resolve(), args.root.resolve()
    config_path = args.page_config.resolve() if args.page_config else None
    os.environ["ATTN_PREFETCH"] = "0"  # no background drawing: the same work every run
    os.environ.pop("HF_TOKEN", None)
    import torch

    torch.set_num_threads(1)  # the same summation order every run
    os.chdir(root)
    sys.path[0] = str(root)
    import app

    layout = NewLayout(app) if hasattr(app, "create_page") else OldLayout(app)
    if config_path is not None:
        config_path.write_text(page_config(layout.blocks))
    layout.engine.model(M)
    out.mkdir(parents=True, exist_ok=True)
    dump_all(layout, out, json.loads((root / "examples.json").read_text(encoding="utf-8")))
    print(f"{type(layout).__name__}: dumped {len(list(out.iterdir()))} files to {out}")


if __name__ == "__main__":
    main()
