"""Phase 7, generation and comparison (the engine half of issue 11), in this process.

- Generate: 16 tokens after the artist passage with every step's attention
  (attn.compute.generation.generate) against transformers' `model.generate(max_new_tokens=16)`
  alone, both greedy (the tokens must agree), back to back in rotating order (target
  <= 1.5x, the median of per-repeat ratios).
- Compare: two new prompts (artist-passage variants, so no cache answers) as the page runs
  them, through app.py's handlers: Analyze with Compare on (two analyses with all measures,
  the alignment, the cross probabilities), then the views it draws (the stacked diagrams and
  difference strip, both highlighted prompts and heatmaps), against one bare forward of the
  longer prompt (target <= 2.2x).

Run alone (imports app.py, which loads the model): `python bench/generation.py [--reps N]`.
`python bench/generation.py --memory` measures peak RSS (VmHWM) of fresh processes at a
2048-token prompt: load + 32-step generation against load + analysis.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

if not __package__:  # run as `python bench/generation.py`: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.common import (
    BUNDLED,
    COMPARE_RATIO,
    GENERATE_RATIO,
    ROOT,
    Report,
    fmt_mb,
    fmt_s,
    med,
    now,
    peak_rss,
    quiet_env,
)
from bench.inprocess import bare_forward
from bench.prompts import ARTIST, artist_variants, sized_prompt

GENERATE_TOKENS = 16
COMPARE_LAYER, HEAD = 5, "Mean over heads"  # the view a comparison opens on (a global layer)
MEMORY_TOKENS, MEMORY_STEPS = 2048, 32


def model_generate(loaded, ids: list[int], n: int) -> tuple[float, list[int]]:
    """transformers' own greedy generation with the KV cache, nothing kept: the reference."""
    import torch

    x = torch.tensor([ids], device=loaded.device)
    t = now()
    with torch.inference_mode():
        out = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    return now() - t, out[0, len(ids):].tolist()


def phase_generation(rep: Report, ctx: dict, reps: int) -> None:
    from attn.compute import generation
    from attn.compute.encode import encode

    loaded = ctx["loaded"]
    ids = encode(loaded.tokenizer, ARTIST)[0]
    # Warm-up (not counted): first kernels of the cached loop and of generate().
    generation.generate(loaded, ARTIST, 2)
    model_generate(loaded, ids, 2)

    s: dict[str, list] = {"generate_s": [], "model_generate_s": [], "compare_s": [], "bare_longer_s": []}
    tokens: dict[str, list[int]] = {}

    def do_ours():
        t = now()
        result = generation.generate(loaded, ARTIST, GENERATE_TOKENS)
        s["generate_s"].append(now() - t)
        tokens["ours"] = result.generated_ids.tolist()

    def do_reference():
        dt, tokens["reference"] = model_generate(loaded, ids, GENERATE_TOKENS)
        s["model_generate_s"].append(dt)

    for i in range(reps):
        steps = [do_ours, do_reference]
        for step in steps[i % 2:] + steps[: i % 2]:  # rotate the order against drift
            step()
    tokens_agree = tokens["ours"] == tokens["reference"]

    # Compare as the page runs it: Analyze (both analyses, the cross probabilities), then the
    # views it draws (stacked diagrams and difference strip, both highlighted prompts and heatmaps).
    page = ctx["page"]
    engine = page.engine
    variants = ctx.get("variants") or artist_variants(loaded.tokenizer)

    def page_compare(a: str, b: str) -> None:
        shown = page.handlers.on_analyze(a, BUNDLED, COMPARE_LAYER, HEAD, None, True, b)[page.ui.shown]
        out = page.handlers.on_view(shown, 0, COMPARE_LAYER, HEAD, "gray", False, "raw", False)
        assert shown.subject.compare == b and "<img" in out[page.ui.figure], "the comparison drew no figure"

    page_compare(next(variants), next(variants))  # warm-up
    unembeds0 = engine.unembed_calls
    for i in range(reps):
        a, b = next(variants), next(variants)
        longer = max((encode(loaded.tokenizer, p)[0] for p in (a, b)), key=len)

        def do_compare():
            t = now()
            page_compare(a, b)
            s["compare_s"].append(now() - t)

        def do_bare():
            s["bare_longer_s"].append(bare_forward(loaded, longer))

        steps = [do_compare, do_bare]
        for step in steps[i % 2:] + steps[: i % 2]:
            step()
    unembeds = engine.unembed_calls - unembeds0
    # The worst case, when neither next token is in the other's top-k: one unembedding of two rows.
    from attn.compute.compare import unembed_probs

    last = engine.cached(a, BUNDLED), engine.cached(b, BUNDLED)
    hidden = np.stack([x.final_hidden for x in last])
    for _ in range(reps):
        t = now()
        unembed_probs(loaded, hidden, [x.next_token_id for x in last])
        s.setdefault("unembed_s", []).append(now() - t)

    rep.raw.update({f"generation.{k}": v for k, v in s.items()})
    rep.raw["generation.tokens"] = len(ids)
    rep.raw["generation.compare_unembed_calls"] = unembeds
    gen_r = med(a / b for a, b in zip(s["generate_s"], s["model_generate_s"]))
    rep.check("7 generation",
              f"generate {GENERATE_TOKENS} tokens after the artist passage ({len(ids)} tokens), every step's "
              f"attention kept, <= {GENERATE_RATIO}x model.generate(max_new_tokens={GENERATE_TOKENS}) alone",
              fmt_s(med(s["generate_s"])),
              f"{gen_r:.2f}x model.generate ({fmt_s(med(s['model_generate_s']))}; paired, median of {reps}); "
              f"same tokens: {tokens_agree}",
              gen_r <= GENERATE_RATIO and tokens_agree)
    cmp_r = med(a / b for a, b in zip(s["compare_s"], s["bare_longer_s"]))
    rep.check("7 generation",
              f"compare two new prompts, as the page runs it (Analyze: two analyses with all measures + cross "
              f"probabilities; then the views drawn) <= {COMPARE_RATIO}x one bare forward of the longer prompt",
              fmt_s(med(s["compare_s"])),
              f"{cmp_r:.2f}x bare ({fmt_s(med(s['bare_longer_s']))}; paired, median of {reps}); "
              f"{unembeds} unembedding calls in {reps} comparisons (one, when needed, costs "
              f"{fmt_s(med(s['unembed_s']))})",
              cmp_r <= COMPARE_RATIO)


# ---- peak memory, fresh processes --------------------------------------------------------


def memory_child(kind: str) -> None:
    """Runs in a fresh process: load, then one generation or one analysis at 2048 tokens."""
    os.environ.setdefault("ATTN_DEVICE", "cpu")
    from attn.compute import forward as inference
    from attn.compute import generation
    from attn.compute.encode import encode
    from attn.model import loading as models
    from attn.settings import Settings

    loaded = models.load(BUNDLED, Settings.from_env(), lambda msg: None)
    prompt = sized_prompt(loaded.tokenizer, MEMORY_TOKENS)
    inference.analyze(loaded, "Warm up")
    before = peak_rss()
    t = now()
    if kind == "generate":
        result = generation.generate(loaded, prompt, MEMORY_STEPS)
        held = f"{result.num_steps} steps, result {fmt_mb(result.nbytes)}"
    else:
        result = inference.analyze(loaded, prompt)
        held = f"result {fmt_mb(result.nbytes)}"
    print(f"{kind}: {len(encode(loaded.tokenizer, prompt)[0])} tokens, {fmt_s(now() - t)}; "
          f"peak RSS {fmt_mb(before)} loaded -> {fmt_mb(peak_rss())}; {held}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="peak RSS at 2048 tokens, fresh processes")
    ap.add_argument("--memory-child", choices=["generate", "analyze"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.memory:
        for kind in ("generate", "analyze"):
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", kind],
                           cwd=ROOT, env=quiet_env(os.environ), check=True)
        return 0
    os.environ.update(quiet_env({}))
    from bench.inprocess import import_app

    rep, ctx = Report(), {}
    import_app(rep, ctx)
    phase_generation(rep, ctx, args.reps)
    for r in rep.rows:
        print(f"{r['status']:5} {r['target']}\n      {r['measured']}: {r['verdict']}")
    for k, v in rep.raw.items():
        print(f"{k}: {v}")
    return 0 if all(r["status"] == "PASS" for r in rep.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
