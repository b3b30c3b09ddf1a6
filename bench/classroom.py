"""A class on ZeroGPU: 30 visitors each open a preset and type 2 prompts, on a fake platform.

    python bench/classroom.py [--visitors 30] [--json FILE]

The page is built by app.create_page as on a ZeroGPU Space (SPACES_ZERO_GPU on), against
bench/fake_spaces.py: spaces' own wrappers and client, a fake device API with 2 GPU slots
and its duration factor (1.5). Gemma 3 1B is the GPU model; no hub is reachable, so the
bundled model's weights stand in for it (the calls, their durations and the platform's
answers are what is counted, not the numbers). A third of the class works on the bundled
270M (the default of an embed without HF_TOKEN), which runs on the Space's CPU.

Each visitor (their own thread, 6 at a time) presses a preset, then types two prompts of the
lab's kind ("<name> was <state> so she went looking for"); classmates often type the same.
Every action is a handler call (Handlers.on_analyze), as the page's Analyze button makes it.
The report counts, per kind of action, the GPU calls and the seconds requested (ours, and as
the platform counts them), and the CPU calls. Of the actions on one (model, prompt), the first
is the one whose GPU call came first (else, with no call, the first to ask); every other one
is "stored": a classmate's answer was there, or in flight, when it came. So a prompt computed
twice shows as a GPU call for stored work. The class has an analysis store of its own (a
temporary directory), so earlier runs change nothing. Before issue 20 every model call went through spaces.GPU with a
fixed 10 s: the last line says what that would have requested for the same class.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as `python bench/classroom.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import fake_spaces
from bench.prompts import EXAMPLES

NAMES = ["Jide", "Ada", "Tom", "Mia", "Ravi", "Lena"]
STATES = ["hungry", "thirsty", "tired", "cold", "bored", "lost", "sleepy", "curious"]
BEFORE_S = 10  # the fixed duration every call asked for before issue 20


def lab_prompt(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)} was {rng.choice(STATES)} so she went looking for"


def label_stored(rows: list[dict]) -> None:
    """Mark every action but the first of its (model, prompt) "stored"; the first is the one
    whose GPU call came first, else the first to ask (two classmates may ask in one order and
    reach the engine in the other: the one who got there first computes, the other waits on it)."""
    by_key: dict = defaultdict(list)
    for row in rows:
        by_key[(row["model"], row["prompt"])].append(row)
    for group in by_key.values():
        called = [row for row in group if row["gpu_requests"]]
        first = (min(called, key=lambda row: row["gpu_requests"][0][0]) if called
                 else next(row for row in group if row["asked_first"]))
        for row in group:
            row["stored"] = row is not first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import app
    from attn.model import loading
    from attn.model.registry import BUNDLED
    from attn.settings import HUB_MODEL, Settings

    settings = replace(Settings.from_env(), models=(HUB_MODEL, BUNDLED), device=None, zero_gpu=True, prefetch=False,
                       default_model=HUB_MODEL, gpu_models=(HUB_MODEL,),
                       store_dir=Path(tempfile.mkdtemp(prefix="attn-classroom-")))
    weights = loading.load(BUNDLED, replace(settings, zero_gpu=False, device="cpu"))

    def stand_in(*args):
        return weights.model, weights.tokenizer

    patches = fake_spaces.Patches()
    patches.setattr(loading, "_load_hub", stand_in)
    patches.setattr(loading, "_load_bundled", stand_in)
    platform = fake_spaces.install(patches, fake_spaces.FakePlatform(gpus=2))
    try:
        page = app.create_page(settings)
        rng = random.Random(20)
        plans = []
        for i in range(args.visitors):
            model = BUNDLED if i % 3 == 2 else HUB_MODEL
            preset = EXAMPLES[(i // 3) % len(EXAMPLES)]["prompt"]  # every preset on both models
            plans.append((f"student-{i:02d}", model, [("preset", preset), ("typed", lab_prompt(rng)),
                                                     ("typed", lab_prompt(rng))]))
        rows: list[dict] = []
        first_asker: dict = {}

        def visit(name, model, actions):
            for kind, prompt in actions:
                first_asker.setdefault((model, prompt), name)
                before = len(platform.requests)  # the platform appends each request: its index is its order
                t = time.perf_counter()
                with platform.visitor(name):
                    out = page.handlers.on_analyze(prompt, model, 12, "Mean over heads", None)
                rows.append({"visitor": name, "model": model, "kind": kind, "prompt": prompt,
                             "asked_first": first_asker[(model, prompt)] == name,
                             "ok": out.get(page.ui.note) == "", "wait_s": time.perf_counter() - t,
                             "gpu_requests": [(i, r) for i, r in enumerate(platform.requests) if i >= before
                                              and r.visitor == name]})

        t = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(visit, *plan) for plan in plans]:
                future.result()
        wall = time.perf_counter() - t
        stats = page.api.stats()
    finally:
        fake_spaces.uninstall(platform)
        patches.undo()

    label_stored(rows)
    table: dict = defaultdict(Counter)
    for row in rows:
        label = ("270M, " if row["model"] == BUNDLED else "1B, ") + row["kind"] + (", stored" if row["stored"] else "")
        table[label]["actions"] += 1
        table[label]["gpu_calls"] += len(row["gpu_requests"])
        table[label]["requested_s"] += sum(r.seconds for _, r in row["gpu_requests"])
        table[label]["refused"] += not row["ok"]
    print(f"{args.visitors} visitors, {len(rows)} actions in {wall:.0f} s; the 1B on ZeroGPU (2 GPU slots), "
          "the 270M on the CPU")
    print(f"{'actions':28} {'n':>4} {'GPU calls':>10} {'GPU s (platform)':>17} {'refused':>8}")
    for label in sorted(table):
        c = table[label]
        print(f"{label:28} {c['actions']:>4} {c['gpu_calls']:>10} {c['requested_s']:>17} {c['refused']:>8}")
    platform_s = sum(r.seconds for r in platform.requests)
    print(f"GPU calls {stats['gpu_calls']}, requested {stats['gpu_seconds_requested']} s "
          f"({platform_s} s as the platform counts, x{fake_spaces.DURATION_FACTOR}); CPU calls {stats['cpu_calls']}")
    before = stats["gpu_calls"] + stats["cpu_calls"]  # every model call went through spaces.GPU
    print(f"before issue 20: {before} GPU calls at {BEFORE_S} s: {before * BEFORE_S} s requested "
          f"({round(before * BEFORE_S * fake_spaces.DURATION_FACTOR)} s as the platform counts)")
    stored_or_cpu = sum(c["gpu_calls"] for label, c in table.items() if "stored" in label or "270M" in label)
    print(f"GPU calls for stored or 270M work: {stored_or_cpu}")
    if args.json:
        summary = {"visitors": args.visitors, "actions": len(rows), "wall_s": wall, "stats": stats,
                   "platform_seconds": platform_s, "table": {k: dict(v) for k, v in table.items()},
                   "before": {"gpu_calls": before, "requested_s": before * BEFORE_S},
                   "gpu_calls_for_stored_or_270m_work": stored_or_cpu}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if stored_or_cpu == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
