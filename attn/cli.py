"""Command line: `python -m attn "PROMPT" [--model NAME] [--layer N] [--head mean|max|N] [--ablate]
[--generate N [--temperature T] [--seed S]] [--json FILE|-]`, and
`python -m attn warm [--model NAME] [--store DIR] [--exact] [--no-ablate] [PROMPTS.json]`, which
computes prompts (the presets by default) into the analysis store."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from attn.compute.engine import Engine
from attn.compute.generation import check_continuation
from attn.errors import AttnError
from attn.model import identity
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["warm"]:  # a prompt that reads "warm": python -m attn -- warm
        return warm(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = Engine.for_settings(replace(Settings.from_env(), models=(args.model,)))
    try:
        if args.generate is not None:  # refused before the model loads
            check_continuation(args.generate, args.temperature, args.seed)
        analysis = engine.analyze(args.prompt, args.model)
        layer = analysis_layer(engine, args, analysis)
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


def analysis_layer(engine: Engine, args, analysis) -> int:
    """The layer asked for, else the model's suggested one (from the registry: a stored
    answer needs no model load for it)."""
    if args.layer is not None:
        return args.layer
    return min(max(models.REGISTRY[args.model].default_layer, 0), analysis.num_layers - 1)


# ---- python -m attn warm ------------------------------------------------------------------------
PRESETS = Path(__file__).resolve().parents[1] / "examples.json"


def warm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attn warm",
        description="Compute prompts (the presets by default) into the analysis store, so that the app "
                    "answers them without its model after a restart.")
    p.add_argument("prompts", nargs="?", type=Path, default=PRESETS,
                   help="a JSON list of prompts, or of objects with a 'prompt' (default: the presets, examples.json)")
    p.add_argument("--model", default=models.BUNDLED, choices=list(models.REGISTRY),
                   help=f"registry model (default: {models.BUNDLED}); its records are keyed by the dtype it runs in "
                        "(ATTN_DEVICE=cpu: float32; cuda: bfloat16)")
    p.add_argument("--store", type=Path,
                   help="the store's folder (default: ATTN_STORE_DIR, else $ATTN_CACHE_DIR/analyses)")
    p.add_argument("--exact", action="store_true",
                   help="recompute every record and leave the folder holding only these (how attn/shipped/ is made)")
    p.add_argument("--no-ablate", dest="ablate", action="store_false", help="store the analyses only")
    return p


def read_prompts(path: Path) -> list[str]:
    """The prompts of a JSON list of strings or of objects with a 'prompt' (examples.json)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError("expected a JSON list")
    prompts = [item["prompt"] if isinstance(item, dict) else item for item in data]
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("every prompt must be non-empty text")
    return prompts


def warm(argv: list[str]) -> int:
    args = warm_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    say = logging.getLogger("attn.warm").info
    settings = replace(Settings.from_env(), models=(args.model,))
    target = args.store or settings.store_dir
    if target is None:
        print("error: the store is off (ATTN_STORE_DIR is empty); name a folder with --store", file=sys.stderr)
        return 2
    try:
        prompts = read_prompts(args.prompts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.prompts}: {exc}", file=sys.stderr)
        return 2
    target = Path(target).expanduser()
    fill = target.with_name(target.name + ".warming") if args.exact else target  # swapped in at the end
    if args.exact:
        shutil.rmtree(fill, ignore_errors=True)
    engine = Engine.for_settings(replace(settings, store_dir=fill), shipped=False)
    try:
        if identity.identify(args.model, settings) is None:  # a hub model not downloaded yet
            engine.model(args.model)
    except AttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [("analysis", lambda p: engine.has_answer(p, args.model), engine.analyze)]
    if args.ablate:
        jobs.append(("ablation", lambda p: engine.cached_ablation(p, args.model) is not None, engine.ablate))
    try:
        for i, prompt in enumerate(prompts, 1):
            for what, known, run in jobs:
                step = f"[{i}/{len(prompts)}] {what} of {visible(prompt, 48)!r}"
                if known(prompt):
                    say(f"{step}: already stored")
                    continue
                t = time.perf_counter()
                run(prompt, args.model)
                say(f"{step}: computed ({time.perf_counter() - t:.1f} s)")
    except AttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not engine.stored.stats().writable:
        print(f"error: could not write to {fill} (see above)", file=sys.stderr)
        return 1
    if args.exact:
        shutil.rmtree(target, ignore_errors=True)
        fill.rename(target)
    files = [p for p in target.rglob("*") if p.is_file()]
    say(f"{target}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1024:,.0f} KiB")
    return 0
