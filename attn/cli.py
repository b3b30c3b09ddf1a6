"""Command line: `python -m attn "PROMPT" [--model NAME] [--layer N] [--head mean|max|N] [--ablate]
[--generate N [--temperature T] [--seed S]] [--json FILE|-]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace

from attn.compute.engine import Engine
from attn.compute.generation import check_continuation
from attn.errors import AttnError
from attn.model import registry as models
from attn.settings import Settings
from attn.views.labels import head_label, visible
from attn.views.view import View, check_view, row, strongest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attn",
        description="Predict the next token and show which prompt tokens it attended to.",
    )
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--model", default=models.BUNDLED, choices=list(models.REGISTRY),
                   help=f"registry model (default: {models.BUNDLED}, bundled and offline)")
    p.add_argument("--layer", type=int, default=None, help="layer to summarise (default: the model's suggested layer)")
    p.add_argument("--head", default="mean", help="mean (default), max, or a head index")
    p.add_argument("--bos", default="gray", choices=["gray", "hide", "exclude"],
                   help="'exclude' renormalises the weights without <BOS>")
    p.add_argument("--top", type=int, default=5, help="how many most-attended tokens to list")
    p.add_argument("--ablate", action="store_true",
                   help="also delete each prompt token in turn and report how the next token's probability moves")
    p.add_argument("--generate", type=int, metavar="N",
                   help="also continue the prompt for N tokens (1-32) and list what each step attended to")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="with --generate: 0 (default) is greedy; above 0 samples, up to 2")
    p.add_argument("--seed", type=int, default=0, help="with --generate and a temperature: the sampler's seed")
    p.add_argument("--json", metavar="FILE", help="write the analysis as JSON to FILE, or - for stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = Engine.for_settings(replace(Settings.from_env(), models=(args.model,)))
    try:
        if args.generate is not None:  # refused before the model loads
            check_continuation(args.generate, args.temperature, args.seed)
        analysis = engine.analyze(args.prompt, args.model)
        layer = analysis_layer(engine, args)
        view = check_view(analysis, View(layer=layer, head=args.head, bos=args.bos))
        ablated = engine.ablate(args.prompt, args.model, progress=_progress) if args.ablate else None
        generated = None
        if args.generate is not None:
            generated = engine.generate(args.prompt, args.model, args.generate, args.temperature, args.seed)
    except AttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        data = analysis.to_json()
        if ablated is not None:
            data["ablation"] = ablated.table()
            data["ablation_exhaustive"] = ablated.exhaustive
        if generated is not None:
            data["generation"] = generated.to_json()
        text = json.dumps(data, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    out = sys.stderr if args.json == "-" else sys.stdout
    weights = row(analysis, view)
    print(f"model: {analysis.model} ({analysis.dtype}), {analysis.num_tokens} tokens with <BOS>", file=out)
    print(f"next token: {analysis.next_token!r}  "
          f"(p={analysis.top_k[0].prob:.3f}; then "
          + ", ".join(f"{t.token!r} {t.prob:.3f}" for t in analysis.top_k[1:4]) + ")", file=out)
    print(f"layer {view.layer}, {analysis.layer_kind(view.layer)}, {head_label(view.head)}: "
          f"<BOS> gets {weights[0]:.3f}; most attended:", file=out)
    for pos, w in strongest(weights, args.top):
        print(f"  {w:6.3f}  #{pos:<4} {visible(analysis.tokens[pos], 40)!r}", file=out)
    if ablated is not None:
        print_ablation(ablated, out)
    if generated is not None:
        print_generation(generated, view, args.top, out)
    return 0


def print_ablation(ablated, out) -> None:
    scope = ("every token" if ablated.exhaustive
             else f"the {len(ablated.deletions)} most attended tokens (mean over layers and heads)")
    print(f"token ablation, {scope} deleted in turn: p({ablated.next_token!r}) = {ablated.p_next:.4f} with all",
          file=out)
    print("   index  p_next    delta  token", file=out)
    for d in ablated.deletions:
        print(f"  #{d.index:<5} {d.p_next:.4f}  {d.delta:+.4f}  {visible(d.token, 40)!r}", file=out)


def print_generation(generated, view: View, top: int, out) -> None:
    how = "greedy" if generated.seed is None else (
        f"sampled at temperature {generated.temperature:g}, seed {generated.seed}")
    stop = ", stopped at end of sequence" if generated.stopped_at_eos else ""
    print(f"continuation ({generated.num_steps} tokens, {how}{stop}): {generated.text!r}", file=out)
    print(f"each step at layer {view.layer}, {head_label(view.head)}: the token, its probability, the most attended",
          file=out)
    for k in range(generated.num_steps):
        step = generated.step_analysis(k)
        weights = row(step, view)
        attended = ", ".join(f"{visible(step.tokens[pos], 20)!r} {w:.2f}" for pos, w in strongest(weights, min(top, 3)))
        print(f"  {k:>2} {visible(step.next_token, 16)!r:<18} {generated.probs[k]:.3f}  {attended}", file=out)


def _progress(done: int, total: int) -> None:
    logging.getLogger(__name__).info("ablation: %d/%d deletions", done, total)


def analysis_layer(engine: Engine, args) -> int:
    if args.layer is not None:
        return args.layer
    return engine.model(args.model).default_layer
